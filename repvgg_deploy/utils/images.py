"""Image files -> the model's input, as at evaluation, and logits -> top-k (PIL + NumPy only).

The recipe is torchvision's evaluation transform, computed the same way::

    Resize(round(img_size / crop_pct))  # shorter side, bilinear, aspect kept
    CenterCrop(img_size)
    ToTensor()                          # HWC uint8 -> CHW float in [0, 1]
    Normalize(mean, std)

``in_chans == 1`` converts to grayscale (PIL "L"), 3 to RGB. ``crop_pct`` defaults to the
ONNX metadata's ``crop_pct`` when there is one, else 0.875 (224 <- 256) for inputs of 64 px and
more and 1.0 (no crop) for small inputs such as 28/32-px Fashion-MNIST.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import UserError
from .io import existing_file

__all__ = ["load_image", "preprocess_image", "preprocess_files", "default_crop_pct", "softmax", "topk",
           "read_labels", "resize_size"]

PathLike = Union[str, os.PathLike]


def default_crop_pct(img_size: int) -> float:
    return 0.875 if img_size >= 64 else 1.0


def load_image(path: PathLike, in_chans: int = 3):
    """Open ``path`` as a PIL image in the model's color mode, or raise a one-line :class:`UserError`."""
    from PIL import Image, UnidentifiedImageError

    path = existing_file(path, "image", "an image")
    try:
        with Image.open(path) as img:
            img.load()
            img = img.copy()
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (PIL cannot identify the file)") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt image data
        raise UserError(f"{path}: unreadable image ({str(e).splitlines()[0][:200] or type(e).__name__})") from None
    if in_chans == 1:
        return img.convert("L")
    if in_chans == 3:
        return img.convert("RGB")
    raise UserError(f"in_chans {in_chans}: only 1 (grayscale) and 3 (RGB) channel images are supported")


def resize_size(width: int, height: int, size: int) -> Tuple[int, int]:
    """(w, h) with the shorter side ``size`` and the aspect kept, as torchvision's ``Resize(int)``."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def preprocess_image(img, img_size: int, mean: Sequence[float], std: Sequence[float],
                     crop_pct: Optional[float] = None) -> np.ndarray:
    """One PIL image (already "L" or "RGB") -> float32 array (C, img_size, img_size)."""
    from PIL import Image

    if crop_pct is None:
        crop_pct = default_crop_pct(img_size)
    if not 0 < crop_pct <= 1:
        raise UserError(f"crop_pct must be in (0, 1], got {crop_pct}")
    scale = int(math.floor(img_size / crop_pct + 0.5)) if crop_pct < 1 else img_size
    w, h = resize_size(img.width, img.height, scale)
    if (w, h) != (img.width, img.height):
        img = img.resize((w, h), Image.BILINEAR)
    left = int(round((w - img_size) / 2.0))
    top = int(round((h - img_size) / 2.0))
    img = img.crop((left, top, left + img_size, top + img_size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = arr.transpose(2, 0, 1)
    mean_a = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    if mean_a.shape[0] != arr.shape[0] or std_a.shape[0] != arr.shape[0]:
        raise UserError(f"mean/std have {mean_a.shape[0]}/{std_a.shape[0]} values for {arr.shape[0]} channels")
    return np.ascontiguousarray((arr - mean_a) / std_a, dtype=np.float32)


def preprocess_files(paths: Sequence[PathLike], metadata: Dict[str, Any],
                     crop_pct: Optional[float] = None) -> np.ndarray:
    """Image files -> (N, C, H, W) float32 with the ONNX metadata's img_size, in_chans, mean, std."""
    in_chans = int(metadata.get("in_chans") or 3)
    img_size = int(metadata.get("img_size") or 224)
    mean = metadata.get("mean") or ([0.485, 0.456, 0.406] if in_chans == 3 else [0.5] * in_chans)
    std = metadata.get("std") or ([0.229, 0.224, 0.225] if in_chans == 3 else [0.5] * in_chans)
    if crop_pct is None and metadata.get("crop_pct") is not None:
        crop_pct = float(metadata["crop_pct"])
    images = [load_image(p, in_chans) for p in paths]  # all files checked before any work
    return np.stack([preprocess_image(img, img_size, mean, std, crop_pct) for img in images])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(logits: np.ndarray, k: int, class_names: Optional[Sequence[str]] = None) -> List[List[Dict[str, Any]]]:
    """Per row: the ``k`` best classes as ``{"index", "name", "prob", "logit"}``, best first."""
    if k < 1:
        raise UserError(f"--topk must be >= 1, got {k}")
    probs = softmax(np.asarray(logits))
    out = []
    for row_logits, row in zip(np.asarray(logits), probs):
        order = np.argsort(-row, kind="stable")[:k]
        out.append([{
            "index": int(i),
            "name": (class_names[int(i)] if class_names is not None and int(i) < len(class_names) else str(int(i))),
            "prob": float(row[i]),
            "logit": float(row_logits[i]),
        } for i in order])
    return out


def read_labels(path: PathLike, num_classes: Optional[int] = None) -> List[str]:
    """One class name per line (blank lines at the end ignored); the count must match ``num_classes``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read labels file {path}: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if num_classes and len(names) != num_classes:
        raise UserError(f"{path} has {len(names)} labels but the model has {num_classes} classes")
    return names

"""Accuracy of a model, a checkpoint or an exported ONNX file on a data set's validation split.

    from repvgg_deploy.train import evaluate_checkpoint, evaluate_onnx
    evaluate_checkpoint("runs/a0/best.pth", data="fashion-mnist")       # {"top1": ..., "top5": ..., "n": ...}
    evaluate_onnx("models/repvgg-a0.onnx", data="fashion-mnist")         # same inputs, ONNX Runtime on CPU

A checkpoint and the ONNX exported from it see exactly the same input tensors (same data
pipeline, the image size and mean/std recorded in both files), so their top-1 agree up to
the fused model's float rounding; :func:`prediction_agreement` measures that.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ..utils.io import atomic_write_text, existing_file
from .distributed import all_reduce_sum

__all__ = ["evaluate_model", "evaluate_checkpoint", "evaluate_onnx", "evaluate", "prediction_agreement",
           "save_predictions", "load_predictions", "autocast_for"]

PathLike = Union[str, Path]


def autocast_for(device: torch.device, amp: Optional[str]):
    """The autocast context of ``--amp`` (``none``/``bf16``/``fp16``) on ``device``."""
    if not amp or amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


def _topk_counts(logits: torch.Tensor, y: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    top = logits.topk(k, dim=1).indices
    hit = top == y.view(-1, 1)
    return top[:, 0], hit[:, 0].sum(), hit.any(dim=1).sum()


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: Iterable, device: Union[str, torch.device, None] = None,
                   amp: Optional[str] = None, return_predictions: bool = False, stop=None) -> Dict[str, Any]:
    """Top-1/top-5 (percent), mean cross-entropy and count of ``model`` over ``loader``'s batches.

    Under DDP the counts are summed over ranks (each rank evaluating its shard). ``stop``: a
    :class:`~repvgg_deploy.train.progress.StopRequest` checked between batches (single process).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    num_classes = None
    loss = torch.zeros((), dtype=torch.float64, device=device)
    c1 = torch.zeros((), dtype=torch.int64, device=device)
    c5 = torch.zeros((), dtype=torch.int64, device=device)
    n = torch.zeros((), dtype=torch.int64, device=device)
    preds: List[torch.Tensor] = []
    t0 = time.perf_counter()
    for x, y in loader:
        if stop is not None and stop.requested:
            raise InterruptedError("evaluation interrupted")
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_for(device, amp):
            logits = model(x)
        logits = logits.float()
        num_classes = logits.shape[1]
        p, h1, h5 = _topk_counts(logits, y, min(5, num_classes))
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        c1 += h1
        c5 += h5
        n += len(y)
        if return_predictions:
            preds.append(p.cpu())
    counts = all_reduce_sum(torch.stack([loss, c1.double(), c5.double(), n.double()]))
    loss_sum, k1, k5, total = (float(v) for v in counts.cpu())
    seconds = time.perf_counter() - t0
    model.train(was_training)
    out: Dict[str, Any] = {
        "top1": 100.0 * k1 / total if total else float("nan"),
        "top5": 100.0 * k5 / total if total else float("nan"),
        "loss": loss_sum / total if total else float("nan"),
        "n": int(total), "correct1": int(k1), "correct5": int(k5),
        "seconds": seconds, "images_per_s": total / seconds if seconds > 0 else 0.0,
    }
    if return_predictions:
        out["predictions"] = torch.cat(preds).tolist() if preds else []
    return out


def prediction_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Fraction of items on which two prediction lists agree."""
    if len(a) != len(b):
        raise ValueError(f"prediction lists differ in length: {len(a)} vs {len(b)}")
    if not len(a):
        return float("nan")
    return float(np.mean(np.asarray(a) == np.asarray(b)))


PREDICTIONS_KEY, PREDICTIONS_VERSION = "repvgg_eval_predictions", 1  # marks a --save-predictions file


def save_predictions(result: Dict[str, Any], path: PathLike) -> None:
    """Write an evaluation result with its per-image top-1 predictions (``evaluate(...,
    return_predictions=True)``) to a JSON file, atomically; :func:`load_predictions` reads it back."""
    if "predictions" not in result:
        raise ValueError("the result has no predictions: evaluate with return_predictions=True")
    atomic_write_text(path, json.dumps({PREDICTIONS_KEY: PREDICTIONS_VERSION, **result}) + "\n")


def load_predictions(path: PathLike) -> Dict[str, Any]:
    """The result written by :func:`save_predictions` (``repvgg-eval --save-predictions``)."""
    path = existing_file(path, "predictions file", "a predictions file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a predictions file of repvgg-eval --save-predictions ({e})") from None
    if (not isinstance(doc, dict) or doc.get(PREDICTIONS_KEY) != PREDICTIONS_VERSION
            or not isinstance(doc.get("predictions"), list) or len(doc["predictions"]) != doc.get("n")):
        raise UserError(f"{path}: not a predictions file of repvgg-eval --save-predictions "
                        f"({PREDICTIONS_KEY}: {PREDICTIONS_VERSION} and n predictions)")
    doc.pop(PREDICTIONS_KEY)
    return doc


def _checkpoint_meta(path: Path) -> Dict[str, Any]:
    """The plain metadata fields of a checkpoint, without reading its tensors (mmap)."""
    try:
        from ..checkpoint import _is_safetensors

        if _is_safetensors(path):  # by its header too, as read_checkpoint does (a renamed file)
            from ..checkpoint import _safetensors_load

            return _safetensors_load(path)[1]
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return {}
    if not isinstance(obj, dict):
        return {}
    meta = {k: v for k, v in obj.items() if isinstance(v, (str, int, float, bool, list, tuple)) or v is None}
    if isinstance(obj.get("config"), dict):  # a repvgg-train checkpoint's TrainConfig
        meta["reprob"] = float(obj["config"].get("reprob") or 0.0)
    return meta


def _dataset_name(spec: str) -> str:
    from ..data import _canonical

    return _canonical(spec) or str(Path(spec).expanduser().resolve())


def _val_loader(data: str, img_size: Optional[int], in_chans: int, mean, std, data_dir, download: bool,
                limit: Optional[int], batch_size: int, device, workers: int, num_classes: int, source: str):
    from ..data import build_dataset, build_loader, dataset_info

    info = dataset_info(data, data_dir, in_chans)
    if num_classes != info.num_classes:
        raise UserError(f"{source} has {num_classes} classes but {info.name} has {info.num_classes}")
    ds = build_dataset(data, "val", img_size=img_size, in_chans=in_chans, data_dir=data_dir, download=download,
                       subset=limit, mean=mean, std=std)
    return info, build_loader(ds, batch_size, train=False, device=device, workers=workers)


def evaluate_checkpoint(
    path: PathLike,
    data: Optional[str] = None,
    arch: Optional[str] = None,
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    batch_size: int = 256,
    limit: Optional[int] = None,
    img_size: Optional[int] = None,
    device: str = "cpu",
    use_ema: bool = False,
    fuse: bool = False,
    workers: int = 0,
    amp: Optional[str] = None,
    return_predictions: bool = False,
    recalibrate_bn: int = 0,
) -> Dict[str, Any]:
    """Accuracy of a checkpoint (any layout :func:`~repvgg_deploy.checkpoint.load_checkpoint` reads).

    ``data`` defaults to the data set recorded in the checkpoint; the image size and mean/std
    come from the checkpoint when it records them, else from the data set. ``arch`` is
    checked against the checkpoint's (a mismatch is a :class:`CheckpointError`). ``fuse``
    evaluates the re-parameterized (deploy) form. ``limit``: the first N validation images.
    ``recalibrate_bn``: first recompute the BatchNorm statistics over this many augmented
    training batches (seed 0) augmented as the checkpoint's run was (random erasing included),
    as the trainer does for its EMA model (for a last.pth's ``--use-ema`` weights, whose
    stored statistics are the averaged ones).
    """
    from ..checkpoint import load_checkpoint
    from ..fuse import reparameterize
    from .distributed import pick_device

    path = Path(path)
    model = load_checkpoint(path, arch=arch, use_ema=use_ema)
    meta = _checkpoint_meta(path)
    data = data or meta.get("dataset")
    if not data:
        raise UserError(f"{path} does not record its data set: pass --data")
    dev = pick_device(device)
    size = img_size or meta.get("img_size")
    model = model.to(dev)
    if recalibrate_bn:
        from ..data import build_dataset, build_loader
        from .recipe import recalibrate_bn as recalibrate

        train = build_dataset(str(data), "train", img_size=size, in_chans=model.in_chans, data_dir=data_dir,
                              download=download, augment=True, mean=meta.get("mean"), std=meta.get("std"),
                              reprob=meta.get("reprob", 0.0))
        recalibrate(model, build_loader(train, batch_size, train=True, device=dev, workers=workers), recalibrate_bn)
    if fuse:
        model = reparameterize(model)
    model = model.eval()
    info, loader = _val_loader(str(data), size, model.in_chans, meta.get("mean"),
                               meta.get("std"), data_dir, download, limit, batch_size, dev, workers, model.num_classes,
                               str(path))
    out = evaluate_model(model, loader, dev, amp=amp, return_predictions=return_predictions)
    out.update({"model": str(path), "format": "checkpoint", "arch": model.arch, "fused": bool(fuse),
                "bn_recalibrated_batches": int(recalibrate_bn),
                "data": info.name, "img_size": int(size or info.img_size),
                "skipped": int(getattr(loader, "skipped", 0))})
    return out


def evaluate_onnx(
    path: PathLike,
    data: Optional[str] = None,
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    batch_size: int = 256,
    limit: Optional[int] = None,
    img_size: Optional[int] = None,
    threads: Optional[int] = None,
    providers: Optional[Sequence[str]] = None,
    workers: int = 0,
    return_predictions: bool = False,
    x64_quant_precision: Optional[bool] = None,
) -> Dict[str, Any]:
    """Accuracy of an exported ONNX file with ONNX Runtime (CPU unless ``providers`` says otherwise).

    ``x64_quant_precision`` (default: on where the CPU's fast int8 kernels saturate) is passed to
    :func:`~repvgg_deploy.backend.onnxrt.session_from_onnx` and recorded in the result.

    Image size, channels, mean/std, class count and (by default) the data set come from the
    file's metadata (written by ``repvgg-export``). A static batch axis is honoured by
    padding the last batch.
    """
    import onnx

    from ..backend.onnxrt import OnnxrtRunner
    from ..export import get_metadata

    path = existing_file(path, "ONNX file", "an ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise UserError(f"{path}: not a readable ONNX file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    meta = get_metadata(proto)
    runner = OnnxrtRunner(path, providers=providers, threads=threads, x64_quant_precision=x64_quant_precision)
    dims = runner.input_shape
    in_chans = int(meta.get("in_chans") or (dims[1] if isinstance(dims[1], int) else 3))
    size = img_size or meta.get("img_size") or (dims[2] if isinstance(dims[2], int) else None)
    fixed = [d for d in dims[2:4] if isinstance(d, int) and d > 0]
    if size and fixed and any(d != size for d in fixed):
        raise UserError(f"{path} takes {'x'.join(map(str, dims[2:4]))} inputs, not {size}x{size}: drop --img-size, "
                        f"or export it again with --img-size {size}")
    static_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    num_classes = int(meta.get("num_classes") or out_dims[-1].dim_value)
    del proto
    data = data or meta.get("dataset")
    if not data:
        raise UserError(f"{path} does not record its data set: pass --data")
    info, loader = _val_loader(str(data), size, in_chans, meta.get("mean"), meta.get("std"), data_dir, download, limit,
                               static_batch or batch_size, "cpu", workers, num_classes, str(path))

    def batches():
        for x, y in loader:
            xn = x.numpy()
            if static_batch and len(xn) != static_batch:
                pad = np.repeat(xn[-1:], static_batch - len(xn), axis=0)
                logits = runner(np.concatenate([xn, pad]))[: len(xn)]
            else:
                logits = runner(xn)
            yield torch.from_numpy(np.asarray(logits, dtype=np.float32)), y

    # evaluate_model runs a module on each batch; here the batches already are ONNX Runtime's logits
    out = evaluate_model(nn.Identity(), batches(), "cpu", return_predictions=return_predictions)
    out.update({"model": str(path), "format": "onnx", "arch": meta.get("arch"), "fused": bool(meta.get("fused", True)),
                "precision": meta.get("precision", "fp32"), "data": info.name, "img_size": int(size or info.img_size),
                "skipped": int(getattr(loader, "skipped", 0)), "ort_x64_quant_precision": runner.x64_quant_precision})
    calibration = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else {}
    if out["precision"] == "int8" and calibration.get("target"):
        out["int8_target"] = calibration["target"]  # tensorrt: ONNX Runtime ran FP32 convs (docs/precision.md)
    return out


def evaluate(path: PathLike, **kwargs: Any) -> Dict[str, Any]:
    """:func:`evaluate_onnx` for ``.onnx`` files, :func:`evaluate_checkpoint` for anything else."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if kwargs.get("recalibrate_bn"):
            raise UserError(f"{path}: --recalibrate-bn works on checkpoints; an ONNX file has no BatchNorm left")
        for k in ("arch", "device", "use_ema", "fuse", "amp", "recalibrate_bn"):
            kwargs.pop(k, None)
        return evaluate_onnx(path, **kwargs)
    for k in ("threads", "providers", "x64_quant_precision"):
        kwargs.pop(k, None)
    return evaluate_checkpoint(path, **kwargs)  # read_checkpoint says "checkpoint not found" itself

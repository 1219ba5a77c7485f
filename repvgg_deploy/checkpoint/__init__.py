"""Checkpoint import: this project's files, the official release's and timm's, auto-detected.

Every layout is brought to this project's key names (which are the official release's), so
one model class loads them all. Files are read with ``torch.load(weights_only=True)`` (no
pickled code is ever executed) or with safetensors.
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..errors import CheckpointError, UnknownArchError
from ..models.config import ARCHS, list_archs, resolve_arch
from ..models.repvgg import RepVGG, create_model, model_default_cfg
from ..utils.io import atomic_path, sha256_file

__all__ = [
    "CheckpointInfo",
    "read_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "convert_state_dict",
    "detect_layout",
    "suggest_archs",
    "FORMAT",
]

FORMAT = "repvgg-deploy"
StateDict = Dict[str, torch.Tensor]


@dataclass
class CheckpointInfo:
    """A checkpoint read from disk, its keys already in this project's layout."""

    state_dict: StateDict
    layout: str  # "repvgg-deploy" | "official" | "timm"
    deploy: bool
    block: str  # "repvgg" | "qarepvgg" (a deploy-form file cannot tell; "repvgg" then)
    num_classes: int
    in_chans: int
    arch: Optional[str] = None  # from the file's metadata, when it has one
    meta: Dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None
    sha256: Optional[str] = None


# ---------------------------------------------------------------- reading


def _torch_load(path: Path) -> Any:
    with open(path, "rb") as f:
        magic = f.read(4)
    is_zip = magic == b"PK\x03\x04"
    if not is_zip and not magic.startswith(b"\x80"):  # torch.save writes a zip; old files a pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "weights_only" in msg:
            first = next((ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
            hint = f" ({first})" if first else ""
            raise CheckpointError(
                f"{path}: refused: unpickling it would execute code{hint}; only tensors and plain "
                "containers are loaded (re-save its state_dict if you trust the file)"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({msg.splitlines()[0] if msg else 'bad pickle'})") from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__})") from None
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "zip" in first.lower() or "central directory" in first.lower() or "stream" in first.lower():
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({first})") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({first})") from None
    except Exception as e:  # anything else the unpickler throws at garbage
        if is_zip:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__})") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _safetensors_load(path: Path) -> Tuple[StateDict, Dict[str, Any]]:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise CheckpointError("reading .safetensors needs the 'safetensors' package (pip install safetensors)") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    decoded: Dict[str, Any] = {}
    for k, v in meta.items():
        try:
            decoded[k] = json.loads(v)
        except (TypeError, ValueError):
            decoded[k] = v
    return sd, decoded


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _holds_ema_as_model(meta: Mapping[str, Any]) -> bool:
    """This project's ``best.pth`` of an EMA run: its ``"model"`` weights are the EMA weights (``"ema": True``)."""
    return meta.get("format") == FORMAT and meta.get("ema") is True


def _unwrap(obj: Any, path: Path, use_ema: bool) -> Tuple[StateDict, Dict[str, Any]]:
    """Find the state dict inside a checkpoint object; return it and the wrapper's metadata.

    ``use_ema`` takes ``model_ema``/``state_dict_ema``, or the ``model`` of this project's
    ``best.pth`` written with EMA on; a file without EMA weights is then an error.
    """
    if _is_state_dict(obj):
        if use_ema:
            raise CheckpointError(f"{path}: holds no EMA weights (a bare state dict), asked for by use_ema")
        return dict(obj), {}
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, not a dict of tensors)")
    meta = {k: v for k, v in obj.items() if isinstance(v, (str, int, float, bool, list, tuple)) or v is None}
    keys = (["model_ema", "state_dict_ema"] if use_ema else []) + ["model", "state_dict", "net", "params"]
    for key in keys:
        if _is_state_dict(obj.get(key)):
            if use_ema and not key.endswith("_ema") and not (key == "model" and _holds_ema_as_model(meta)):
                raise CheckpointError(f"{path}: holds no EMA weights ('model_ema'), asked for by use_ema")
            return dict(obj[key]), meta
    raise CheckpointError(
        f"{path}: not a checkpoint: no dict of tensors at the top level or under "
        f"'model'/'state_dict' (keys: {', '.join(map(str, list(obj)[:8]))})"
    )


def _strip_prefix(sd: StateDict) -> StateDict:
    for prefix in ("module.", "model.", "backbone."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


# ---------------------------------------------------------------- layouts

_TIMM_RULES: List[Tuple[re.Pattern, str]] = [
    (re.compile(r"^stem\."), "stage0."),
    (re.compile(r"^stages\.(\d+)\.(\d+)\."), "STAGE"),
    (re.compile(r"\.conv_kxk\."), ".rbr_dense."),
    (re.compile(r"\.conv_1x1\."), ".rbr_1x1."),
    (re.compile(r"\.identity\."), ".rbr_identity."),
    (re.compile(r"\.reparam_conv\."), ".rbr_reparam."),
    (re.compile(r"^head\.fc\."), "linear."),
]


def _timm_key(key: str) -> str:
    for pattern, repl in _TIMM_RULES:
        if repl == "STAGE":
            key = pattern.sub(lambda m: f"stage{int(m.group(1)) + 1}.{m.group(2)}.", key)
        else:
            key = pattern.sub(repl, key)
    return key


def detect_layout(sd: Mapping[str, Any]) -> str:
    """``"timm"`` for timm's ByobNet names, ``"official"`` for the official release's, else ``"unknown"``."""
    keys = list(sd)
    if any(k.startswith(("stem.conv_kxk.", "stem.reparam_conv.", "stages.")) for k in keys) or any(
        k.startswith("head.fc.") for k in keys
    ):
        return "timm"
    if any(k.startswith("stage0.") for k in keys) and any(k.startswith("linear.") for k in keys):
        return "official"
    return "unknown"


def convert_state_dict(sd: Mapping[str, torch.Tensor], layout: Optional[str] = None) -> StateDict:
    """Rename a timm or official-release state dict to this project's key names."""
    layout = layout or detect_layout(sd)
    if layout == "timm":
        return {_timm_key(k): v for k, v in sd.items()}
    return dict(sd)


def _describe(sd: StateDict) -> Tuple[bool, str, int, int]:
    deploy = any(k.endswith("rbr_reparam.weight") for k in sd)
    qa = any(re.match(r"^stage\d(\.\d+)?\.bn\.weight$", k) for k in sd) or any(k.endswith("rbr_1x1.weight") for k in sd)
    head = sd.get("linear.weight")
    stem = sd.get("stage0.rbr_reparam.weight" if deploy else "stage0.rbr_dense.conv.weight")
    if head is None or stem is None:
        missing = "linear.weight" if head is None else "stage0 conv weight"
        raise CheckpointError(
            f"not a RepVGG checkpoint: no {missing} (first keys: {', '.join(list(sd)[:5])})"
        )
    return deploy, ("qarepvgg" if qa else "repvgg"), int(head.shape[0]), int(stem.shape[1])


def _is_safetensors(path: Path) -> bool:
    """A ``.safetensors`` name, or a file that starts like one: an 8-byte little-endian header length
    that fits in the file, then the header's JSON ``{`` (a ``torch.save`` file starts with ``PK`` or a
    pickle opcode)."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size


def read_checkpoint(path: Union[str, Path], use_ema: bool = False) -> CheckpointInfo:
    """Read any supported checkpoint file and describe it (layout, form, classes, channels)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    if _is_safetensors(path):
        raw, meta = _safetensors_load(path)
        if use_ema and not _holds_ema_as_model(meta):
            raise CheckpointError(f"{path}: holds no EMA weights (a safetensors file of one state dict), asked for by use_ema")
    else:
        raw, meta = _unwrap(_torch_load(path), path, use_ema)
    raw = _strip_prefix(raw)
    own = meta.get("format") == FORMAT
    layout = FORMAT if own else detect_layout(raw)
    if layout == "unknown":
        raise CheckpointError(
            f"{path}: not a RepVGG checkpoint: keys match neither this project's, the official release's "
            f"nor timm's layout (first keys: {', '.join(list(raw)[:4])})"
        )
    sd = convert_state_dict(raw, layout)
    try:
        deploy, block, num_classes, in_chans = _describe(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    # This project's files name their arch; another wrapper's "arch" may be anything (timm's
    # CheckpointSaver writes the class name, 'byobnet'): used only when it is an arch name here.
    arch = meta.get("arch")
    if arch is not None:
        try:
            arch = resolve_arch(str(arch))
        except UnknownArchError:
            if own:
                raise
            arch = None
    if arch is not None:
        block = ARCHS[arch].block
    return CheckpointInfo(sd, layout, deploy, block, num_classes, in_chans, arch, meta, str(path), sha256_file(path))


# ---------------------------------------------------------------- matching


def _expected_shapes(arch: str, deploy: bool, num_classes: int, in_chans: int) -> Dict[str, torch.Size]:
    with torch.device("meta"):
        model = create_model(arch, deploy=deploy, num_classes=num_classes, in_chans=in_chans)
    return {k: v.shape for k, v in model.state_dict().items()}


def _matches(sd: StateDict, expected: Dict[str, torch.Size]) -> bool:
    needed = {k for k in expected if not k.endswith("num_batches_tracked")}
    have = {k for k in sd if not k.endswith("num_batches_tracked")}
    return needed == have and all(sd[k].shape == expected[k] for k in needed)


def suggest_archs(info: CheckpointInfo) -> List[str]:
    """Archs whose parameter shapes match the checkpoint exactly."""
    blocks = ["repvgg", "qarepvgg"] if info.deploy else [info.block]
    out = []
    for block in blocks:
        for arch in list_archs(block):
            if _matches(info.state_dict, _expected_shapes(arch, info.deploy, info.num_classes, info.in_chans)):
                out.append(arch)
    return out


def _mismatch_message(arch: str, info: CheckpointInfo, model: nn.Module) -> str:
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in info.state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in info.state_dict if k not in expected and not k.endswith("num_batches_tracked")]
    shapes = [
        f"{k} {list(info.state_dict[k].shape)} vs {list(expected[k])}"
        for k in expected
        if k in info.state_dict and info.state_dict[k].shape != expected[k]
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    suggested = suggest_archs(info)
    hint = f"; its shapes suggest {' or '.join(suggested)}" if suggested else "; its shapes match no known arch"
    return f"checkpoint {info.path} does not fit {arch}: " + "; ".join(parts) + hint


# ---------------------------------------------------------------- loading


def load_checkpoint(
    path: Union[str, Path],
    arch: Optional[str] = None,
    num_classes: Optional[int] = None,
    in_chans: Optional[int] = None,
    use_ema: bool = False,
) -> RepVGG:
    """Build the model a checkpoint describes and load it (eval mode).

    The layout (this project's, official, timm), the form (training or deploy), the class
    count and the input channels come from the file; ``arch`` comes from the file's metadata
    when it has some (another tool's ``"arch"`` field only when it is an arch name here), else
    from ``arch``, else from the parameter shapes when only one arch fits. A deploy-form file
    builds a deploy-form model. ``use_ema`` loads ``model_ema`` (or this project's ``best.pth``
    of an EMA run) and is an error for a file without EMA weights. BN ``num_batches_tracked``
    counters are matched to the model (dropped or added). Metadata (mean/std, image size,
    class names, source) is left in ``model.pretrained_cfg``.
    """
    info = read_checkpoint(path, use_ema=use_ema)
    if arch is not None:
        arch = resolve_arch(arch)
        if info.arch is not None and info.arch != arch:
            raise CheckpointError(f"{path} holds a {info.arch} checkpoint, not {arch}")
    else:
        arch = info.arch
    if num_classes is not None and num_classes != info.num_classes:
        raise CheckpointError(f"{path} has {info.num_classes} classes, not {num_classes}")
    if in_chans is not None and in_chans != info.in_chans:
        raise CheckpointError(f"{path} takes {info.in_chans} input channels, not {in_chans}")
    if arch is None:
        fits = suggest_archs(info)
        if not fits:
            raise CheckpointError(f"{path}: its shapes match no known arch; pass --arch")
        # A deploy-form file fits RepVGG-X and QARepVGG-X alike; the fused graphs are identical.
        arch = fits[0]
    if not info.deploy and ARCHS[arch].block != info.block:
        raise CheckpointError(
            f"{path} holds {'QARepVGG' if info.block == 'qarepvgg' else 'RepVGG'} blocks, not {arch}'s; "
            f"its shapes suggest {' or '.join(suggest_archs(info)) or 'no known arch'}"
        )
    model = create_model(arch, deploy=info.deploy, num_classes=info.num_classes, in_chans=info.in_chans)
    expected = model.state_dict()
    # BN counters are not weights: drop the ones the model has no BN for, add the ones the file lacks.
    sd = {k: v for k, v in info.state_dict.items() if k in expected or not k.endswith("num_batches_tracked")}
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v
    if not _matches(sd, {k: v.shape for k, v in expected.items()}):
        raise CheckpointError(_mismatch_message(arch, info, model))
    model.load_state_dict(sd, strict=True)
    model.eval()
    cfg = model_default_cfg(model)
    for key in ("mean", "std", "img_size", "class_names", "dataset"):
        if key in info.meta:
            cfg[key] = info.meta[key]
    cfg.update({"source": info.path, "sha256": info.sha256, "layout": info.layout, "deploy": info.deploy})
    model.pretrained_cfg = cfg  # type: ignore[assignment]
    return model


def save_checkpoint(model: RepVGG, path: Union[str, Path], **extra: Any) -> None:
    """Write ``model`` in this project's format (atomically), with its arch and any ``extra`` fields.

    ``.safetensors`` paths get a safetensors file with the metadata in its header.
    """
    from ..fuse.reparam import is_deploy

    meta: Dict[str, Any] = {
        "format": FORMAT,
        "format_version": 1,
        "arch": model.arch,
        "num_classes": model.num_classes,
        "in_chans": model.in_chans,
        "deploy": is_deploy(model),
    }
    meta.update(extra)
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file(sd, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
    else:
        with atomic_path(path) as tmp:
            torch.save({**meta, "model": sd}, tmp)

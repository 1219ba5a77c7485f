"""Training checkpoints: ``last.pth`` (everything a resume needs) and ``best.pth`` (weights + metadata).

Both are this project's checkpoint format (``"format": "repvgg-deploy"``, arch, classes,
channels, ``"model"``: the state dict) plus the data set's ``img_size``, ``mean``, ``std``,
``class_names`` and ``dataset``, so ``repvgg-export`` and ``repvgg-eval`` take either
directly. ``last.pth`` adds the optimizer, the schedule, the EMA weights (``model_ema``),
the grad scaler, the RNG states and the position in the run. Everything is tensors, numbers,
strings, lists and dicts, so ``torch.load(weights_only=True)`` reads it.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

from ..checkpoint import FORMAT, _torch_load
from ..errors import CheckpointError
from ..utils.io import atomic_path

__all__ = ["capture_rng", "restore_rng", "save_train_state", "save_weights", "load_train_state", "atomic_save"]


def capture_rng() -> Dict[str, Any]:
    """torch (CPU and every CUDA device), Python ``random`` and NumPy RNG states, as tensors and lists."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
    }
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: Union[str, os.PathLike]) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename: never half a file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a checkpoint is an ordinary file


def model_meta(model: torch.nn.Module, data_meta: Dict[str, Any]) -> Dict[str, Any]:
    from ..fuse.reparam import is_deploy

    return {"format": FORMAT, "format_version": 1, "arch": model.arch, "num_classes": int(model.num_classes),
            "in_chans": int(model.in_chans), "deploy": bool(is_deploy(model)), **data_meta}


def _cpu_sd(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_train_state(path: Union[str, os.PathLike], model: torch.nn.Module, data_meta: Dict[str, Any],
                     **state: Any) -> None:
    """Write ``last.pth``: ``model``'s weights and metadata, plus ``state`` (optimizer, ...)."""
    obj = model_meta(model, data_meta)
    obj["model"] = _cpu_sd(model)
    for k, v in state.items():
        if isinstance(v, torch.nn.Module):
            v = _cpu_sd(v)
        obj[k] = v
    atomic_save(obj, path)


def save_weights(path: Union[str, os.PathLike], model: torch.nn.Module, data_meta: Dict[str, Any], **extra: Any) -> None:
    """Write ``best.pth``: weights and metadata only."""
    obj = model_meta(model, data_meta)
    obj.update(extra)
    obj["model"] = _cpu_sd(model)
    atomic_save(obj, path)


def load_train_state(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a ``last.pth`` (``weights_only=True``); a one-line error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    obj = _torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or "model" not in obj:
        raise CheckpointError(f"{path}: not a repvgg-train checkpoint")
    missing: List[str] = [k for k in ("optimizer", "epoch", "step_in_epoch", "global_step") if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: holds weights but no training state ({', '.join(missing)} missing); "
                              "it cannot be resumed (start a new run from it is not supported)")
    return obj

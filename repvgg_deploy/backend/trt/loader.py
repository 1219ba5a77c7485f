"""Load a serialized engine: file checks and compatibility check first, then TensorRT.

Order (documented in docs/tensorrt.md): the engine file and its JSON are checked without
TensorRT (missing, empty, truncated, modified, another kind of file); then TensorRT and the GPU
must be there; then the JSON's TensorRT version and GPU are compared with this machine's; only
then does TensorRT deserialize.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Union

from ...build.metadata import EngineMeta, check_engine_compat, check_engine_file, read_engine_meta
from ...errors import UserError
from .env import gpu_identity, import_tensorrt, require_cuda, trt_logger, trt_version

__all__ = ["LoadedEngine", "load_engine", "precheck_engine"]

PathLike = Union[str, os.PathLike]


@dataclass
class LoadedEngine:
    """A deserialized ``ICudaEngine`` with the objects that must outlive it."""

    engine: Any
    runtime: Any
    logger: Any
    path: Path
    meta: Optional[EngineMeta]
    notes: List[str] = field(default_factory=list)


def precheck_engine(engine_path: PathLike) -> Optional[EngineMeta]:
    """Checks that need no TensorRT: the file and its JSON. Returns the JSON (``None`` if absent)."""
    meta = read_engine_meta(engine_path)
    check_engine_file(engine_path, meta)
    return meta


def load_engine(
    engine_path: PathLike,
    device: int = 0,
    check_compat: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> LoadedEngine:
    """Deserialize ``engine_path`` on GPU ``device`` after every check that can come first."""
    path = Path(engine_path)
    precheck_engine(path)
    trt = import_tensorrt()
    require_cuda(device)
    import torch

    torch.cuda.set_device(device)
    notes: List[str] = []
    meta = read_engine_meta(path)
    if check_compat:
        meta = check_engine_compat(path, trt_version=trt_version(trt), gpu=gpu_identity(device), notes=notes)
    for note in notes:
        log(f"note: {note}")
    logger = trt_logger(trt, log=log)  # stderr by default: TensorRT's own Logger prints to stdout
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise UserError(f"{path}: TensorRT {trt_version(trt)} cannot deserialize it (not a TensorRT engine, "
                        "truncated, or built by another TensorRT version): rebuild it with repvgg-trt build")
    return LoadedEngine(engine=engine, runtime=runtime, logger=logger, path=path, meta=meta, notes=notes)

"""The JSON beside every engine, and the checks made with it before TensorRT deserializes.

``engines/x.engine`` gets ``engines/x.engine.json`` (the ``.engine.json`` suffix keeps it from
overwriting the export report ``x.json`` when an engine is written beside its ONNX). Fields:

- ``tensorrt``: version and major of the TensorRT that built it;
- ``gpu``: name, compute capability (``9.0``) and ``sm_90`` of the GPU it was built on;
- ``precision``: ``fp32``, ``fp16`` or ``int8`` (from the ONNX: metadata, else its types and Q/DQ);
- ``profile``: input name and min/opt/max shapes (``null`` for a static engine);
- ``io``: every input and output with dtype and shape;
- ``onnx``: path, sha256 and the ONNX's own metadata (arch, classes, img_size, mean, std ...);
- ``engine_bytes``, ``engine_sha256``, ``engine_magic``: to tell a truncated or foreign file;
- ``build``: seconds, workspace, optimization level, timing cache, strongly typed, date, host.

Compatibility rules (:func:`check_engine_compat`): an engine runs only with the TensorRT
version that built it (major.minor.patch must match) and on a GPU of the same compute
capability; a different GPU model of the same compute capability is allowed with a note.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..errors import UserError
from ..utils.io import atomic_write_json, existing_file, sha256_file

__all__ = ["EngineMeta", "meta_path", "write_engine_meta", "read_engine_meta", "check_engine_compat",
           "check_engine_file", "EngineCompatError", "FORMAT", "ENGINE_JSON_SUFFIX", "describe_build"]

FORMAT = "repvgg-deploy/engine-v1"
ENGINE_JSON_SUFFIX = ".json"  # appended to the full engine name: x.engine -> x.engine.json
PathLike = Union[str, os.PathLike]

# Below this a file cannot be a serialized engine (the smallest real ones are tens of kB).
MIN_ENGINE_BYTES = 1024


class EngineCompatError(UserError):
    """The engine was built by another TensorRT version or on another kind of GPU."""


@dataclass
class EngineMeta:
    engine: str
    engine_bytes: int
    engine_sha256: str
    engine_magic: str
    tensorrt: Dict[str, Any]
    gpu: Optional[Dict[str, Any]]
    precision: str
    profile: Optional[Dict[str, Any]]
    io: List[Dict[str, Any]]
    onnx: Dict[str, Any]
    build: Dict[str, Any]
    format: str = FORMAT
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def onnx_metadata(self) -> Dict[str, Any]:
        return dict(self.onnx.get("metadata") or {})

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "EngineMeta":
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("engine", "tensorrt", "precision") if k not in data]
        if missing:
            raise UserError(f"engine JSON lacks {', '.join(missing)}")
        defaults = {"engine_bytes": -1, "engine_sha256": "", "engine_magic": "", "gpu": None, "profile": None,
                    "io": [], "onnx": {}, "build": {}}
        values = {**defaults, **{k: v for k, v in data.items() if k in known}}
        return cls(**values)


def meta_path(engine_path: PathLike) -> Path:
    """``x.engine`` -> ``x.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ENGINE_JSON_SUFFIX)


def write_engine_meta(engine_path: PathLike, meta: EngineMeta) -> Path:
    path = meta_path(engine_path)
    atomic_write_json(path, meta.to_dict())
    return path


def read_engine_meta(engine_path: PathLike) -> Optional[EngineMeta]:
    """The JSON beside ``engine_path``; ``None`` when there is none, :class:`UserError` when unreadable."""
    path = meta_path(engine_path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: not a readable engine JSON ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not an engine JSON (a JSON object was expected)")
    try:
        return EngineMeta.from_dict(data)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    except TypeError as e:
        raise UserError(f"{path}: not an engine JSON ({e})") from None


def _foreign_kind(head: bytes) -> Optional[str]:
    """What a file that is clearly no engine is, from its first bytes."""
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch checkpoint?)"
    if head.startswith(b"\x7fELF"):
        return "an ELF binary"
    if len(head) > 3 and head[0] == 0x08 and head[1] < 64 and head[2] in (0x12, 0x3A, 0x42):
        # ModelProto: ir_version (field 1), then producer_name (2), graph (7) or opset_import (8)
        return "an ONNX model (build an engine from it: repvgg-trt build x.onnx)"
    sample = head[:512]
    if sample and all(32 <= c < 127 or c in (9, 10, 13) for c in sample):
        return "a text file"
    return None


_SHA_CACHE: Dict[tuple, str] = {}


def _sha256_cached(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process (engines are large)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def check_engine_file(engine_path: PathLike, meta: Optional[EngineMeta] = None) -> Path:
    """File checks that need no TensorRT: exists, not empty, not truncated, not another kind of file.

    With the engine JSON, the size and sha256 recorded at build time must match (a truncated or
    modified file is refused); without it only gross cases are caught (empty, tiny, an image, a
    checkpoint, an ONNX file, text).
    """
    path = existing_file(engine_path, "engine", "an engine")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path}: empty file, not a TensorRT engine")
    with open(path, "rb") as f:
        head = f.read(4096)
    kind = _foreign_kind(head)
    if kind:
        raise UserError(f"{path}: not a TensorRT engine but {kind}")
    if meta is not None and meta.engine_bytes >= 0:
        if size != meta.engine_bytes:
            what = "truncated" if size < meta.engine_bytes else "longer than built"
            raise UserError(f"{path}: {what} ({size} bytes; the build wrote {meta.engine_bytes}): rebuild it")
        if meta.engine_magic and head[:len(bytes.fromhex(meta.engine_magic))].hex() != meta.engine_magic:
            raise UserError(f"{path}: not the engine described by {meta_path(path).name} (its header differs): rebuild it")
        if meta.engine_sha256 and _sha256_cached(path) != meta.engine_sha256:
            raise UserError(f"{path}: modified or corrupted (sha256 differs from {meta_path(path).name}): rebuild it")
    elif size < MIN_ENGINE_BYTES:
        raise UserError(f"{path}: {size} bytes, too small to be a TensorRT engine (truncated?)")
    return path


def describe_build(trt_version: Optional[str], gpu: Optional[Dict[str, Any]]) -> str:
    """``TensorRT 10.8 on NVIDIA H100 (sm_90)``."""
    from ..backend.trt.env import version_tuple

    v = ".".join(map(str, version_tuple(trt_version or "")[:3])) or "unknown"
    if gpu:
        cc = gpu.get("sm") or ("sm_" + str(gpu.get("compute_capability", "?")).replace(".", ""))
        where = f"{gpu.get('name', 'unknown GPU')} ({cc})"
    else:
        where = "no GPU"
    return f"TensorRT {v} on {where}"


def check_engine_compat(
    engine_path: PathLike,
    trt_version: Optional[str] = None,
    gpu: Optional[Dict[str, Any]] = None,
    notes: Optional[List[str]] = None,
) -> Optional[EngineMeta]:
    """Read the engine's JSON and refuse an engine this machine cannot run, before deserializing it.

    ``trt_version`` and ``gpu`` (``{"name", "compute_capability"}``) describe this machine; by
    default they are detected (TensorRT's ``__version__``; PyTorch's view of GPU 0). Rules:

    - TensorRT major.minor.patch must equal the build's (engines are not portable across versions);
    - the GPU's compute capability must equal the build's; another model of the same compute
      capability is accepted with a note appended to ``notes``.

    Returns the metadata, or ``None`` when the engine has no JSON (nothing to check: a note is
    appended). Raises :class:`EngineCompatError` naming both sides and saying to rebuild.
    """
    from ..backend.trt.env import gpu_identity, version_tuple

    notes = notes if notes is not None else []
    meta = read_engine_meta(engine_path)
    if meta is None:
        notes.append(f"no {meta_path(engine_path).name} beside the engine: TensorRT version and GPU are not "
                     "checked before deserializing")
        return None
    if trt_version is None:
        from ..backend.trt.env import import_tensorrt

        trt_version = str(import_tensorrt().__version__)
    if gpu is None:
        gpu = gpu_identity()
    built_v = version_tuple(str(meta.tensorrt.get("version", "")))[:3]
    here_v = version_tuple(trt_version)[:3]
    built_cc = str((meta.gpu or {}).get("compute_capability", ""))
    here_cc = str((gpu or {}).get("compute_capability", ""))
    problems = []
    if built_v != here_v:
        problems.append("TensorRT version")
    if meta.gpu and gpu and built_cc != here_cc:
        problems.append("GPU compute capability")
    if meta.gpu and not gpu:
        problems.append("GPU")
    if problems:
        raise EngineCompatError(
            f"{engine_path}: built with {describe_build(meta.tensorrt.get('version'), meta.gpu)}; this machine has "
            f"{describe_build(trt_version, gpu)} (different {' and '.join(problems)}): rebuild it with repvgg-trt build"
        )
    if meta.gpu and gpu and meta.gpu.get("name") != gpu.get("name"):
        notes.append(f"built on {meta.gpu.get('name')}, running on {gpu.get('name')} (same compute capability "
                     f"{here_cc}): it runs, but rebuild it here for the best tactics")
    return meta

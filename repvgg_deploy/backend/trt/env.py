"""Is TensorRT here, which version, and which GPU: the checks every TensorRT command makes first.

TensorRT is imported lazily (``import_tensorrt()``), never at module import, so that the rest
of the project (and ``repvgg-trt verify``) works on machines without it. A missing package, a
package whose libraries cannot be loaded, or a missing GPU raise
:class:`~repvgg_deploy.errors.MissingDependency` with one line that says how to get it.

Version-specific code is written as ``if TRT_MAJOR >= 11:`` / ``if TRT_MAJOR < 11:`` blocks,
with ``TRT_MAJOR = trt_major(trt)``; ``tests/test_trt_api.py`` reads those blocks to check each
TensorRT name against the versions it runs on (see docs/tensorrt.md).
"""
from __future__ import annotations

import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from ...errors import MissingDependency, UserError

__all__ = ["import_tensorrt", "trt_major", "trt_version", "install_hint", "require_cuda", "gpu_identity",
           "trt_unavailable", "version_tuple", "trt_logger", "SUPPORTED_MAJORS"]

# TensorRT majors this project is written and checked for (tests/test_trt_api.py).
SUPPORTED_MAJORS = (10, 11)

_DOCKER_HINT = "use the project's Docker image (docs/tensorrt.md)"


def _cuda_major() -> Optional[int]:
    try:
        import torch

        return int(str(torch.version.cuda).split(".")[0]) if torch.version.cuda else None
    except Exception:
        return None


def install_hint() -> str:
    """How to get TensorRT on this machine, in one phrase (picks cu12/cu13 after PyTorch's CUDA)."""
    cuda = _cuda_major()
    pkg = f"tensorrt-cu{cuda}" if cuda in (12, 13) else "tensorrt-cu13 (CUDA 13) or tensorrt-cu12 (CUDA 12)"
    return f"{_DOCKER_HINT}, or pip install --extra-index-url https://pypi.nvidia.com {pkg}"


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`MissingDependency` with one actionable line."""
    try:
        import tensorrt as trt  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] not in ("tensorrt", "tensorrt_bindings", "tensorrt_libs"):
            raise MissingDependency(f"TensorRT cannot be imported: {e}; {install_hint()}") from None
        raise MissingDependency(f"TensorRT is not installed: {install_hint()}") from None
    except (ImportError, OSError) as e:  # bindings present, libnvinfer missing or of another version
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MissingDependency(
            f"TensorRT is installed but its libraries cannot be loaded ({first}); {install_hint()}"
        ) from None
    major = trt_major(trt)
    if major not in SUPPORTED_MAJORS:
        raise MissingDependency(
            f"TensorRT {trt_version(trt)} is not supported (this project supports TensorRT "
            f"{' and '.join(map(str, SUPPORTED_MAJORS))}); {install_hint()}"
        )
    return trt


def trt_version(trt: Any) -> str:
    return str(getattr(trt, "__version__", "0"))


def version_tuple(text: str) -> Tuple[int, ...]:
    """``"10.8.0.43"`` -> ``(10, 8, 0, 43)``; stops at the first non-numeric part."""
    out = []
    for part in str(text).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def trt_major(trt: Any) -> int:
    """Major version of an imported ``tensorrt`` module (10, 11, ...)."""
    v = version_tuple(trt_version(trt))
    return v[0] if v else 0


def require_cuda(device: int = 0) -> None:
    """Raise :class:`MissingDependency` unless PyTorch sees an NVIDIA GPU."""
    try:
        import torch
    except ImportError:  # pragma: no cover - a dependency
        raise MissingDependency("PyTorch is not installed (pip install torch)") from None
    if not torch.cuda.is_available():
        why = "this PyTorch build has no CUDA" if not torch.version.cuda else "no NVIDIA GPU is visible to PyTorch"
        raise MissingDependency(f"TensorRT needs an NVIDIA GPU: {why} (torch.cuda.is_available() is False); "
                                f"run on a machine with a GPU and its driver, or {_DOCKER_HINT} with --gpus all")
    if device >= torch.cuda.device_count():
        raise UserError(f"GPU {device} does not exist (this machine has {torch.cuda.device_count()})")


def trt_unavailable(device: int = 0) -> Optional[str]:
    """None when TensorRT engines can be built and run here, else why not in one line: the same
    words as the error of :func:`import_tensorrt` / :func:`require_cuda` (for the commands that skip
    TensorRT instead of failing, ``repvgg-bench --backend auto`` and ``repvgg-pipeline``)."""
    try:
        import_tensorrt()
        require_cuda(device)
    except (MissingDependency, UserError) as e:
        return str(e)
    return None


def gpu_identity(device: int = 0) -> Optional[Dict[str, Any]]:
    """Name and compute capability of GPU ``device`` as PyTorch sees it; ``None`` without one."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        p = torch.cuda.get_device_properties(device)
        return {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "sm": f"sm_{p.major}{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1), "cuda": str(torch.version.cuda)}
    except Exception:
        return None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


_LOGGER: Any = None


def trt_logger(trt: Any, verbose: bool = False, log: Optional[Callable[[str], None]] = None) -> Any:
    """The process's one TensorRT logger, pointed at ``log`` (default: stderr), its error list emptied.

    TensorRT keeps a single logger per process: a Builder or Runtime made while another one is
    alive gets the first logger, whatever it is passed. So every Builder and Runtime here gets this
    same object, which forwards warnings (and INFO with ``verbose``) to ``log`` and keeps the errors
    in ``.errors``. Never stdout (TensorRT's own ``trt.Logger`` prints there, into ``--json`` output).
    """
    global _LOGGER
    if _LOGGER is None:
        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: List[str] = []
                self.verbose = False
                self.sink: Callable[[str], None] = _stderr

            def log(self, severity, msg):  # noqa: A003 - TensorRT's name
                name = getattr(severity, "name", str(severity))
                if name in ("INTERNAL_ERROR", "ERROR"):
                    self.errors.append(msg)
                    self.sink(f"[TensorRT] {name}: {msg}")
                elif name == "WARNING" or self.verbose and name == "INFO":
                    self.sink(f"[TensorRT] {name}: {msg}")

        _LOGGER = _Logger()
    _LOGGER.errors = []
    _LOGGER.verbose = bool(verbose)
    _LOGGER.sink = log or _stderr
    return _LOGGER

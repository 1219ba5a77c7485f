"""Find what a folder (or a list of paths) holds to benchmark: ``.onnx`` files and TensorRT engines."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

from ..errors import UserError

__all__ = ["discover", "Found", "ENGINE_SUFFIXES", "ONNX_SUFFIXES"]

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ONNX_SUFFIXES = (".onnx",)
_SIDE = (".json", ".md", ".txt", ".cache", ".log", ".csv", ".png")  # companions of an engine/ONNX of the same stem


@dataclass
class Found:
    path: Path
    kind: str  # "onnx" | "engine"


def _is_companion(p: Path, folder_files: Sequence[Path]) -> bool:
    """Hidden files, READMEs, and sidecars of a model file (``a0.json``, ``a0.engine.json``, ``a0.timing.cache``)."""
    if p.name.startswith(".") or p.name.upper().startswith(("README", "LICENSE")):
        return True
    stems = {q.name.split(".")[0] for q in folder_files if q.suffix.lower() in ENGINE_SUFFIXES + ONNX_SUFFIXES}
    return p.suffix.lower() in _SIDE and p.name.split(".")[0] in stems


def _check_onnx(p: Path) -> str:
    """'' when ``p`` parses as an ONNX model with a graph, else why not."""
    import onnx

    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        return f"not a readable ONNX file ({type(e).__name__})"
    if not proto.graph.node:
        return "an ONNX file without nodes"
    return ""


def discover(paths: Sequence[str]) -> Tuple[List[Found], List[Tuple[str, str]]]:
    """(runnable files, [(skipped path, why)]). Folders are listed one level deep, sorted by name."""
    found: List[Found] = []
    skipped: List[Tuple[str, str]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"no such file or folder: {raw}")
        if p.is_dir():
            files = sorted(q for q in p.iterdir() if q.is_file())
            if not files:
                raise UserError(f"{raw}: the folder is empty (expected .onnx files or TensorRT .engine files)")
            explicit = False
        else:
            files, explicit = [p], True
        for q in files:
            suffix = q.suffix.lower()
            if suffix in ONNX_SUFFIXES:
                why = _check_onnx(q)
                if why:
                    skipped.append((str(q), why))
                else:
                    found.append(Found(q, "onnx"))
            elif suffix in ENGINE_SUFFIXES:
                if q.stat().st_size == 0:
                    skipped.append((str(q), "an empty file"))
                else:
                    found.append(Found(q, "engine"))
            elif not explicit and _is_companion(q, files):
                continue
            else:
                skipped.append((str(q), "neither an ONNX file (.onnx) nor a TensorRT engine (.engine/.plan)"))
    return found, skipped

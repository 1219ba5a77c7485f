"""Atomic file writing and hashing: a crash never leaves a half-written file behind."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

from ..errors import UserError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
           "sha256_file", "check_writable_dir", "check_out_dir", "existing_file"]

PathLike = Union[str, os.PathLike]


def existing_file(path: PathLike, what: str, a_what: str) -> Path:
    """``Path(path)`` if it is there and not a folder, else a one-line :class:`UserError`
    ("{what} not found: PATH" / "not {a_what} but a folder: PATH")."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if path.is_dir():
        raise UserError(f"not {a_what} but a folder: {path}")
    return path


def check_writable_dir(path: PathLike) -> Path:
    """Fail early, with one line, when ``path`` is a folder or its folder is missing or cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output is a folder, not a file: {path}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"output folder does not exist: {folder}")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write to output folder {folder}: {e.strerror or e}") from None
    return path


def check_out_dir(path: PathLike, flag: str = "--out") -> Path:
    """Fail early, with one line, when the folder ``path`` is a file, or could not be made or
    written: its nearest existing ancestor is a file or read-only. Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder")
    there = path
    while not there.exists():
        there = there.parent
    if not there.is_dir():
        raise UserError(f"{flag} {path}: {there} is a file, not a folder")
    if not os.access(there, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot write to {there}")
    return path


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    check_writable_dir(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; the file should get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()

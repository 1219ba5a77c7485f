"""Where the in-memory data sets come from: Fashion-MNIST (IDX files) and CIFAR-10.

Fashion-MNIST is read straight from its four IDX files (``.gz`` or not) with gzip and
NumPy: no torchvision, and the whole set loads in well under a second. Search order: the
``data_dir`` given, ``/usr/share/datasets/fashion-mnist`` (Debian's
``dataset-fashion-mnist``), then a torchvision download into ``data_dir`` (or
``~/.cache/repvgg-deploy``) only when ``download=True``.
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError

__all__ = [
    "read_idx",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "load_cifar10",
    "FASHION_MNIST_DIRS",
    "FASHION_MNIST_CLASSES",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_SIZES",
    "default_download_dir",
]

PathLike = Union[str, os.PathLike]

# System folders searched after --data-dir (a module attribute, so tests and sites can change it).
FASHION_MNIST_DIRS: List[Path] = [Path("/usr/share/datasets/fashion-mnist")]
CIFAR10_DIRS: List[Path] = [Path("/usr/share/datasets/cifar10"), Path("/usr/share/datasets/cifar-10")]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Images per split of the real Fashion-MNIST (the IDX files' headers give the same counts).
FASHION_MNIST_SIZES = {"train": 60_000, "val": 10_000}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def default_download_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "repvgg-deploy"


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` or plain) into an array of its stored shape and type."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX size mismatch: header says {shape} ({expected} bytes), file has {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _idx_file(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):  # the last: some mirrors use dots
        if (folder / name).is_file():
            return folder / name
    return None


def _candidates(data_dir: Optional[PathLike], sub: Sequence[str]) -> List[Path]:
    out: List[Path] = []
    if data_dir is not None:
        d = Path(data_dir)
        out += [d] + [d / s for s in sub]
    return out


def find_fashion_mnist(data_dir: Optional[PathLike] = None, download: bool = False) -> Path:
    """The folder holding the four Fashion-MNIST IDX files (see the module doc for the order)."""
    looked = _candidates(data_dir, ("fashion-mnist", "FashionMNIST/raw")) + list(FASHION_MNIST_DIRS)
    for folder in looked:
        if all(_idx_file(folder, f) for pair in _FILES.values() for f in pair):
            return folder
    if download:
        root = Path(data_dir) if data_dir is not None else default_download_dir()
        try:
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(str(root), train=train, download=True)
        except Exception as e:
            raise DataError(f"Fashion-MNIST download into {root} failed ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        folder = root / "FashionMNIST" / "raw"
        if all(_idx_file(folder, f) for pair in _FILES.values() for f in pair):
            return folder
        raise DataError(f"Fashion-MNIST download into {root} left no IDX files in {folder}")
    where = ", ".join(str(p) for p in looked)
    raise DataError(
        f"Fashion-MNIST not found (looked in {where}); install it with 'apt-get install dataset-fashion-mnist', "
        "or pass --download (with --data-dir to choose where it goes)"
    )


@lru_cache(maxsize=4)
def _load_pair(images: str, labels: str) -> Tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{images}: expected N x H x W images and N labels, got {x.shape} and {y.shape}")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_fashion_mnist(split: str, data_dir: Optional[PathLike] = None, download: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of ``split`` ("train" or "val" = the test set)."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    folder = find_fashion_mnist(data_dir, download)
    img_stem, lbl_stem = _FILES[split]
    x, y = _load_pair(str(_idx_file(folder, img_stem)), str(_idx_file(folder, lbl_stem)))
    return x, y.astype(np.int64)


def load_cifar10(split: str, data_dir: Optional[PathLike] = None, download: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 32, 32, 3], labels int64 [N])`` from torchvision's ``cifar-10-batches-py`` layout."""
    try:
        from torchvision.datasets import CIFAR10
    except ImportError:  # pragma: no cover - a dependency
        raise DataError("CIFAR-10 needs torchvision (pip install torchvision)") from None
    roots = _candidates(data_dir, ()) + list(CIFAR10_DIRS)
    for root in roots:
        if (root / "cifar-10-batches-py" / "test_batch").is_file():
            try:
                ds = CIFAR10(str(root), train=split == "train", download=False)
            except RuntimeError as e:
                raise DataError(f"CIFAR-10 in {root} is incomplete or corrupt ({e})") from None
            return np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64)
    if download:
        root = Path(data_dir) if data_dir is not None else default_download_dir()
        try:
            ds = CIFAR10(str(root), train=split == "train", download=True)
        except Exception as e:
            raise DataError(f"CIFAR-10 download into {root} failed ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        return np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64)
    where = ", ".join(str(p) for p in roots)
    raise DataError(
        f"CIFAR-10 not found (looked for cifar-10-batches-py/ in {where}); pass --download "
        "(with --data-dir to choose where it goes), or --data-dir pointing at a folder holding cifar-10-batches-py/"
    )

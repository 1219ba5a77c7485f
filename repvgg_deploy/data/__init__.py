"""Data sets for training and evaluation, by one spec string.

``spec`` is ``fashion-mnist``, ``cifar10``, ``fake`` (torchvision ``FakeData``, for smoke
tests) or a folder holding ``train/`` and ``val/`` in ImageFolder layout (ImageNet-style
transforms). Items are ``(normalized float tensor [C, H, W], int label)``;
``split="val"`` is the test set of Fashion-MNIST and CIFAR-10 and ``val/`` of a folder.

    info = dataset_info("fashion-mnist")             # classes, mean/std, default img_size
    ds = build_dataset("fashion-mnist", "train", augment=True, subset=2000)
    loader = build_loader(ds, batch_size=128, train=True, device="cuda")   # fast path

Fashion-MNIST and CIFAR-10 live in memory as ``uint8`` tensors and are transformed
batch-wise on the device (:class:`TensorBatchLoader`); folders go through a DataLoader with
worker processes (:class:`FolderBatchLoader`). Both loaders share one interface:
``set_epoch(e)``, ``len()``, ``iter_from(batch)``, ``skipped``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset, Subset

from ..errors import DataError
from ..models.repvgg import IMAGENET_MEAN, IMAGENET_STD
from .folder import EpochSampler, FolderBatchLoader, SafeImageFolder, SkippedSample, collate_skip, find_classes, folder_transform
from .memory import InMemoryDataset, TensorBatchLoader, batch_transform, mix_seed
from .sources import (CIFAR10_CLASSES, FASHION_MNIST_CLASSES, FASHION_MNIST_SIZES, find_fashion_mnist, load_cifar10,
                      load_fashion_mnist, read_idx)

__all__ = [
    "DatasetInfo", "dataset_info", "build_dataset", "build_loader", "KNOWN_DATASETS",
    "InMemoryDataset", "TensorBatchLoader", "FolderBatchLoader", "SafeImageFolder", "SkippedSample",
    "collate_skip", "batch_transform", "EpochSampler", "read_idx", "load_fashion_mnist", "load_cifar10",
    "find_fashion_mnist", "folder_transform", "mix_seed", "FASHION_MNIST_SIZES",
]

FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FAKE_SIZES = {"train": 512, "val": 128}
KNOWN_DATASETS = ("fashion-mnist", "cifar10", "fake")
_ALIASES = {"fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "fmnist": "fashion-mnist", "cifar10": "cifar10", "cifar-10": "cifar10", "fake": "fake"}


@dataclass(frozen=True)
class DatasetInfo:
    """What a model trained on a data set needs to know about it.

    ``mean``/``std`` have one value per channel of the requested ``in_chans``;
    ``img_size`` is the default input size (32 for the small sets, 224 for folders);
    ``kind`` is ``"memory"``, ``"folder"`` or ``"fake"``; ``root`` the folder of a folder set.
    """

    name: str
    num_classes: int
    class_names: Tuple[str, ...]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    img_size: int
    in_chans: int = 3
    kind: str = "memory"
    root: Optional[str] = field(default=None)

    @property
    def default_in_chans(self) -> int:
        return 1 if self.name == "fashion-mnist" else 3


def _canonical(spec: str) -> Optional[str]:
    return _ALIASES.get(spec.strip().lower())


def _per_channel(values: Sequence[float], in_chans: int, name: str) -> Tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if in_chans == 1:  # colour statistics for grey input: their mean
        return (sum(values) / len(values),)
    raise DataError(f"{name} has {len(values)}-channel statistics; --in-chans {in_chans} is not supported")


def _folder_root(spec: str) -> Path:
    root = Path(spec).expanduser()
    if not root.exists():
        known = ", ".join(KNOWN_DATASETS)
        raise DataError(f"unknown data set {spec!r}: not one of {known}, nor an existing folder "
                        "(a folder needs train/ and val/ in ImageFolder layout)")
    if not root.is_dir():
        raise DataError(f"data {spec!r} is a file; expected a folder with train/ and val/ (ImageFolder layout)")
    return root


def dataset_info(spec: str, data_dir: Optional[Union[str, os.PathLike]] = None, in_chans: Optional[int] = None) -> DatasetInfo:
    """Describe a data set (no images are read; a folder's ``train/`` classes are listed)."""
    name = _canonical(spec)
    if name == "fashion-mnist":
        c = in_chans or 1
        return DatasetInfo("fashion-mnist", 10, FASHION_MNIST_CLASSES, (FASHION_MNIST_MEAN,) * c,
                           (FASHION_MNIST_STD,) * c, 32, c, "memory")
    if name == "cifar10":
        c = in_chans or 3
        return DatasetInfo("cifar10", 10, CIFAR10_CLASSES, _per_channel(CIFAR10_MEAN, c, name),
                           _per_channel(CIFAR10_STD, c, name), 32, c, "memory")
    if name == "fake":
        c = in_chans or 3
        return DatasetInfo("fake", 10, tuple(f"class{i}" for i in range(10)), (0.5,) * c, (0.5,) * c, 32, c, "fake")
    root = _folder_root(spec)
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"{root} has no train/ folder (ImageFolder layout: {root}/train/<class>/<image> and {root}/val/...)")
    classes = find_classes(train)
    c = in_chans or 3
    return DatasetInfo(str(root), len(classes), tuple(classes), _per_channel(IMAGENET_MEAN, c, "ImageNet"),
                       _per_channel(IMAGENET_STD, c, "ImageNet"), 224, c, "folder", str(root))


def build_dataset(
    spec: str,
    split: str,
    img_size: Optional[int] = None,
    in_chans: Optional[int] = None,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    download: bool = False,
    augment: bool = False,
    subset: Optional[int] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    reprob: float = 0.0,
) -> Dataset:
    """The ``split`` ("train" or "val") of ``spec`` as a Dataset of ``(float [C, H, W], int)``.

    ``augment`` turns on the training augmentation (random crop with padding + flip for the
    in-memory sets, RandomResizedCrop + flip for folders). ``subset``: the first N items
    (for a folder, N items evenly spaced over its sorted list, so that every class is in).
    ``mean``/``std`` override the data set's normalization (e.g. a checkpoint's).
    ``reprob``: with ``augment``, random erasing with this probability per image.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if subset is not None and subset < 1:
        raise DataError(f"subset must be >= 1, got {subset}")
    info = dataset_info(spec, data_dir, in_chans)
    size = int(img_size or info.img_size)
    if size < 1:
        raise DataError(f"img_size must be >= 1, got {size}")
    m = _per_channel(mean, info.in_chans, "mean") if mean is not None else info.mean
    s = _per_channel(std, info.in_chans, "std") if std is not None else info.std

    if info.kind == "memory":
        if info.name == "fashion-mnist":
            if info.in_chans not in (1, 3):
                raise DataError(f"Fashion-MNIST is grey: --in-chans must be 1 or 3, got {info.in_chans}")
            x, y = load_fashion_mnist(split, data_dir, download)
        else:
            if info.in_chans != 3:
                raise DataError(f"CIFAR-10 is colour: --in-chans must be 3, got {info.in_chans}")
            x, y = load_cifar10(split, data_dir, download)
        if subset is not None:
            x, y = x[:subset], y[:subset]
        return InMemoryDataset(x, y, size, m, s, info.in_chans, augment, info.name, info.class_names,
                              reprob=reprob)

    if info.kind == "fake":
        from torchvision.datasets import FakeData

        n = FAKE_SIZES[split] if subset is None else subset
        ds = FakeData(size=n, image_size=(info.in_chans, size, size), num_classes=info.num_classes,
                      transform=folder_transform(size, m, s, train=augment, in_chans=info.in_chans, reprob=reprob),
                      random_offset=0 if split == "train" else 10**6)
        ds.classes = list(info.class_names)  # type: ignore[attr-defined]
        return ds

    folder = Path(info.root or spec) / split
    if not folder.is_dir():
        raise DataError(f"{info.root} has no {split}/ folder (ImageFolder layout: {info.root}/{split}/<class>/<image>)")
    ds = SafeImageFolder(folder, folder_transform(size, m, s, train=augment, in_chans=info.in_chans, reprob=reprob),
                         classes=info.class_names if split == "val" else None)
    if subset is not None and subset < len(ds):
        idx = torch.linspace(0, len(ds) - 1, subset).round().long().unique().tolist()
        sub = Subset(ds, idx)
        sub.classes = ds.classes  # type: ignore[attr-defined]
        return sub
    return ds


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool = False,
    device: Union[str, torch.device] = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    channels_last: bool = False,
):
    """The right batch iterator for ``dataset``: shuffled, sharded and ``drop_last`` when ``train``.

    ``batch_size`` is per rank. In-memory sets get a :class:`TensorBatchLoader` (the whole set
    on ``device``, transforms there; ``workers`` unused), anything else a
    :class:`FolderBatchLoader` with ``workers`` worker processes.
    """
    if isinstance(dataset, InMemoryDataset):
        return TensorBatchLoader(dataset, batch_size, shuffle=train, drop_last=train, seed=seed, rank=rank,
                                 world_size=world_size, device=device, channels_last=channels_last)
    return FolderBatchLoader(dataset, batch_size, shuffle=train, drop_last=train, seed=seed, rank=rank,
                             world_size=world_size, device=device, workers=workers, channels_last=channels_last)

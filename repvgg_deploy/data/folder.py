"""ImageFolder data (``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``), ImageNet-style.

Training: ``RandomResizedCrop(img_size)`` + horizontal flip; evaluation: resize to
``img_size / 0.875`` and centre-crop ``img_size`` (224 -> 256 -> 224). A file that cannot be
decoded is skipped with a warning and counted: the data set yields a
:class:`SkippedSample` in its place and :func:`collate_skip` drops it from the batch, so an
epoch never dies on one bad JPEG.
"""
from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from .memory import mix_seed, shard

__all__ = ["SafeImageFolder", "SkippedSample", "collate_skip", "folder_transform", "EpochSampler",
           "FolderBatchLoader", "find_classes"]


class SkippedSample(NamedTuple):
    """Stands in for an image that could not be read."""

    path: str
    reason: str


def find_classes(folder: Union[str, Path]) -> List[str]:
    folder = Path(folder)
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{folder} has no class sub-folders (expected {folder}/<class>/<image>)")
    return classes


def folder_transform(img_size: int, mean: Sequence[float], std: Sequence[float], train: bool, in_chans: int = 3,
                     reprob: float = 0.0) -> Callable:
    """ImageNet-style transforms; ``reprob`` adds torchvision's ``RandomErasing`` to training."""
    from torchvision import transforms as T

    ops: List[Any] = []
    if in_chans == 1:
        ops.append(T.Grayscale(1))
    if train:
        ops += [T.RandomResizedCrop(img_size), T.RandomHorizontalFlip()]
    else:
        ops += [T.Resize(int(round(img_size / 0.875))), T.CenterCrop(img_size)]
    ops += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    if train and reprob > 0:
        ops.append(T.RandomErasing(p=reprob, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0))
    return T.Compose(ops)


class SafeImageFolder(Dataset):
    """``torchvision.datasets.ImageFolder`` that skips unreadable images instead of raising.

    ``self[i]`` is ``(tensor, label)`` or, for a file that cannot be decoded, a
    :class:`SkippedSample` (a warning is issued once per file and process, and
    ``self.skipped`` lists it when read in this process).
    """

    def __init__(self, root: Union[str, Path], transform: Callable, classes: Optional[Sequence[str]] = None) -> None:
        from torchvision.datasets import ImageFolder

        root = Path(root)
        try:
            self._folder = ImageFolder(str(root), transform=transform)
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"{root}: {str(e).splitlines()[0]}") from None
        if classes is not None and list(classes) != list(self._folder.classes):
            raise DataError(
                f"{root} has classes {self._folder.classes[:5]}... which differ from the training set's "
                f"{list(classes)[:5]}... (the class folders of train/ and val/ must match)"
            )
        self.root = root
        self.classes: List[str] = list(self._folder.classes)
        self.samples: List[Tuple[str, int]] = list(self._folder.samples)
        self.targets = [t for _, t in self.samples]
        self.transform = transform
        self.loader = self._folder.loader
        self.skipped: List[SkippedSample] = []
        self._warned: set = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            img = self.loader(path)
            return self.transform(img), target
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... on bad files
            skipped = SkippedSample(path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip())
            if path not in self._warned:
                self._warned.add(path)
                warnings.warn(f"skipping unreadable image {path} ({skipped.reason})", RuntimeWarning, stacklevel=2)
            self.skipped.append(skipped)
            return skipped


def collate_skip(batch: List[Any]) -> Tuple[torch.Tensor, torch.Tensor, List[SkippedSample]]:
    """Stack the readable items; return ``(images, labels, skipped samples)``."""
    good = [b for b in batch if not isinstance(b, SkippedSample)]
    bad = [b for b in batch if isinstance(b, SkippedSample)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good], dtype=torch.long), bad


class EpochSampler(Sampler):
    """Deterministic per-epoch order, sharded across ranks, startable at any position.

    Same contract as :class:`~repvgg_deploy.data.memory.TensorBatchLoader`'s order:
    ``shuffle`` permutes with ``(seed, epoch)``, :func:`~repvgg_deploy.data.memory.shard`
    gives this rank its part (``batch_size`` per rank), ``start`` skips items.
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 batch_size: int = 1):
        self.n, self.shuffle, self.seed, self.batch_size = n, shuffle, seed, batch_size
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.start = 0

    def order(self) -> List[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 1)))
        else:
            order = torch.arange(self.n)
        return shard(order, self.rank, self.world_size, self.batch_size, self.drop_last).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start:])

    def __len__(self) -> int:
        return len(self.order()) - self.start


def _worker_init(worker_id: int) -> None:
    # The main process handles Ctrl-C / SIGTERM (it saves a checkpoint, then stops the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class FolderBatchLoader:
    """A DataLoader over a :class:`SafeImageFolder` with the interface of ``TensorBatchLoader``.

    Worker processes decode and augment; batches are moved to ``device`` here. Unreadable
    images are dropped from their batch and counted in ``self.skipped`` (with their paths in
    ``self.skipped_paths``). Resuming mid-epoch (:meth:`iter_from`) restores the exact order
    of the remaining images; their random crops differ from the uninterrupted run's.
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, device: Union[str, torch.device] = "cpu", workers: int = 0,
                 channels_last: bool = False) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.seed, self.rank = seed, rank
        self.sampler = EpochSampler(len(dataset), shuffle, seed, rank, world_size, drop_last, self.batch_size)  # type: ignore[arg-type]
        self.generator = torch.Generator()
        self.loader = DataLoader(
            dataset, batch_size=self.batch_size, sampler=self.sampler, num_workers=workers, collate_fn=collate_skip,
            pin_memory=self.device.type == "cuda", drop_last=drop_last, worker_init_fn=_worker_init if workers else None,
            persistent_workers=workers > 0, prefetch_factor=4 if workers else None, generator=self.generator,
        )
        self.skipped = 0
        self.skipped_paths: List[str] = []

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = int(epoch)
        self.generator.manual_seed(mix_seed(self.seed, epoch, 3, self.rank))

    def __len__(self) -> int:
        n = len(self.sampler.order())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start: int):
        self.sampler.start = start * self.batch_size
        try:
            for x, y, bad in self.loader:
                if bad:
                    self.skipped += len(bad)
                    self.skipped_paths += [b.path for b in bad]
                if len(y) == 0:
                    continue
                x = x.to(self.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, y.to(self.device, non_blocking=True)
        finally:
            self.sampler.start = 0

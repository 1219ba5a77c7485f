"""In-memory data sets (Fashion-MNIST, CIFAR-10) and their fast batch iterator.

The whole set stays one ``uint8`` tensor ``[N, c, h, w]`` at its stored size. Every
transform works on a whole batch of tensors, on whatever device the batch is on:

1. to float; to ``img_size``: Fashion-MNIST's 28x28 is zero-padded to 32x32 (the usual
   CIFAR-style input), any other size change is a bilinear, antialiased resize;
2. training only (``augment``): zero-pad by ``img_size // 8`` and crop back at a random
   offset (``RandomCrop(img_size, padding=img_size // 8)``), and a random horizontal flip;
3. grey -> 3 channels by replication when ``in_chans=3``; ``(x / 255 - mean) / std``;
4. training only, when ``reprob > 0``: random erasing (Zhong et al., 2020; torchvision's
   ``RandomErasing``, timm's ``--reprob``): with probability ``reprob`` a sample gets one
   rectangle of 2-33 % of its area, aspect ratio 0.3-3.3, set to 0 (the mean after
   normalization).

:class:`TensorBatchLoader` feeds a trainer with no per-image Python work and no worker
processes: it gathers a batch of indices on the device and runs the transform there, so a
GPU is never waiting for a CPU pipeline. Its randomness is a pure function of
``(seed, epoch, batch index, rank)``, so an epoch can be resumed at any batch exactly.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["InMemoryDataset", "TensorBatchLoader", "batch_transform", "mix_seed", "random_erasing", "shard"]


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (NumPy's SeedSequence hashing: no correlated streams)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def shard(order: torch.Tensor, rank: int, world_size: int, batch_size: int, drop_last: bool) -> torch.Tensor:
    """Rank ``rank``'s part of an epoch's ``order``.

    Training (``drop_last``): global step ``b`` consumes ``order[b*B : (b+1)*B]`` with
    ``B = batch_size * world_size``, and rank ``r`` takes its ``r``-th block of
    ``batch_size``; so a run sees the same global batches whatever its number of processes,
    and every rank runs the same number of steps. Evaluation: ``order[rank::world_size]``,
    every item exactly once over all ranks.
    """
    if drop_last:
        global_bs = batch_size * world_size
        steps = len(order) // global_bs
        return order[: steps * global_bs].view(steps, world_size, batch_size)[:, rank].reshape(-1)
    return order[rank::world_size] if world_size > 1 else order


def _to_size(x: torch.Tensor, img_size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == (img_size, img_size):
        return x
    if h == w == 28 and img_size == 32:  # (Fashion-)MNIST -> the 32x32 input of CIFAR-style nets
        return F.pad(x, (2, 2, 2, 2))
    return F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=True)


def _random_crop_flip(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch, then a per-sample random horizontal flip.

    The random numbers are drawn on ``gen``'s device (a CUDA generator for batches on a GPU:
    no host-to-device copy, which from pageable memory would synchronize every step).
    """
    b, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen, device=gen.device).to(x.device)
    flips = (torch.rand(b, generator=gen, device=gen.device) < 0.5).to(x.device)
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
        xp = torch.gather(xp, 2, rows)  # [b, c, h, w + 2 pad]
        cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
        x = torch.gather(xp, 3, cols)
    return torch.where(flips.view(b, 1, 1, 1), x.flip(3), x)


def random_erasing(
    x: torch.Tensor,
    p: float,
    gen: torch.Generator,
    scale: Tuple[float, float] = (0.02, 0.33),
    ratio: Tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
) -> torch.Tensor:
    """Per-sample random erasing of a batch ``[B, C, H, W]`` (torchvision's ``RandomErasing``).

    Each sample, with probability ``p``, gets one rectangle of ``scale`` of its area and an
    aspect ratio drawn log-uniformly from ``ratio``, set to ``value`` in every channel.
    Vectorized: instead of torchvision's up to 10 tries for a rectangle that fits, one
    draw whose sides are clipped to the image.
    """
    if p <= 0.0:
        return x
    b, _, h, w = x.shape
    u = torch.rand(b, 5, generator=gen, device=gen.device).to(x.device)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    eh = torch.sqrt(area * r).round().clamp(1, h)
    ew = torch.sqrt(area / r).round().clamp(1, w)
    top = torch.floor(u[:, 2] * (h - eh + 1))
    left = torch.floor(u[:, 3] * (w - ew + 1))
    on = u[:, 4] < p
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    inside = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
              & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1)) & on.view(b, 1, 1))
    return x.masked_fill(inside.unsqueeze(1), value)


def batch_transform(
    images: torch.Tensor,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int,
    augment: bool = False,
    generator: Optional[torch.Generator] = None,
    reprob: float = 0.0,
) -> torch.Tensor:
    """``uint8 [B, c, h, w]`` -> normalized ``float32 [B, in_chans, img_size, img_size]`` (see the module doc)."""
    x = images.float()
    x = _to_size(x, img_size)
    gen = None
    if augment:
        gen = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        x = _random_crop_flip(x, img_size // 8, gen)
    if x.shape[1] != in_chans:
        if x.shape[1] != 1:
            raise ValueError(f"cannot turn {x.shape[1]}-channel images into {in_chans} channels")
        x = x.expand(-1, in_chans, -1, -1)
    m, s = _stats(tuple(mean), tuple(std), x.device)
    x = (x - m) / s
    if gen is not None and reprob > 0.0:
        x = random_erasing(x, reprob, gen)
    return x


_STATS: dict = {}


def _stats(mean: Tuple[float, ...], std: Tuple[float, ...], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """mean * 255 and std * 255 as [1, C, 1, 1] tensors on ``device``, made once (no copy per batch)."""
    key = (mean, std, str(device))
    if key not in _STATS:
        _STATS[key] = (torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).mul(255.0).to(device),
                       torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).mul(255.0).to(device))
    return _STATS[key]


class InMemoryDataset(Dataset):
    """A data set held as one ``uint8`` tensor; items are ``(normalized float [C, H, W], int label)``.

    Indexing one item runs the batch transform on a batch of one (its augmentation, when
    ``augment`` is set, draws from torch's global RNG); trainers use
    :class:`TensorBatchLoader` instead, which transforms whole batches on the device.
    """

    def __init__(
        self,
        images: Union[np.ndarray, torch.Tensor],
        labels: Union[np.ndarray, torch.Tensor],
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        in_chans: int,
        augment: bool = False,
        name: str = "",
        class_names: Sequence[str] = (),
        reprob: float = 0.0,
    ) -> None:
        x = torch.as_tensor(np.array(images, copy=True)) if isinstance(images, np.ndarray) else images
        if x.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {x.dtype}")
        if x.ndim == 3:  # N, H, W
            x = x.unsqueeze(1)
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # N, H, W, C
            x = x.permute(0, 3, 1, 2)
        self.images = x.contiguous()
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)) if isinstance(labels, np.ndarray) else labels.long()
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.img_size = int(img_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.in_chans = int(in_chans)
        self.augment = bool(augment)
        if not 0.0 <= reprob <= 1.0:
            raise ValueError(f"reprob must be in [0, 1], got {reprob}")
        self.reprob = float(reprob)
        self.name = name
        self.classes = list(class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        x = self.transform(self.images[index: index + 1] if index >= 0 else self.images[index].unsqueeze(0))
        return x[0], int(self.labels[index])

    def transform(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
                  augment: Optional[bool] = None) -> torch.Tensor:
        augment = self.augment if augment is None else augment
        return batch_transform(images, self.img_size, self.mean, self.std, self.in_chans, augment, generator,
                               reprob=self.reprob if augment else 0.0)

    def subset(self, n: int) -> "InMemoryDataset":
        """The first ``n`` items (shares storage)."""
        out = InMemoryDataset.__new__(InMemoryDataset)
        out.__dict__.update(self.__dict__)
        out.images, out.labels = self.images[:n], self.labels[:n]
        return out


class TensorBatchLoader:
    """Batches of an :class:`InMemoryDataset`, gathered and transformed on ``device``.

    ``shuffle``: a new permutation every epoch (call :meth:`set_epoch`), from ``seed`` and
    the epoch alone; every rank takes its part of the same permutation (see :func:`shard`).
    ``batch_size`` is per rank.
    Yields ``(float images [B, C, H, W], int64 labels [B])`` on ``device``.
    """

    def __init__(
        self,
        dataset: InMemoryDataset,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: Union[str, torch.device] = "cpu",
        augment: Optional[bool] = None,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.device = torch.device(device)
        self.augment = dataset.augment if augment is None else bool(augment)
        self.channels_last = channels_last
        self.epoch = 0
        self.skipped = 0  # never anything to skip in memory; the folder loader's counter
        self._images = dataset.images.to(self.device)
        self._labels = dataset.labels.to(self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> torch.Tensor:
        """This rank's item indices for the current epoch, in order."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 1)))
        else:
            order = torch.arange(n)
        return shard(order, self.rank, self.world_size, self.batch_size, self.drop_last)

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.dataset) // (self.batch_size * self.world_size)
        n = len(range(self.rank, len(self.dataset), self.world_size))
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from batch ``start`` on: exactly the tail of a full iteration."""
        order = self.indices().to(self.device)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size: (b + 1) * self.batch_size]
            gen = None
            if self.augment:  # on the data's device: CPU and GPU runs differ, each is reproducible
                gen = torch.Generator(device=self.device).manual_seed(mix_seed(self.seed, self.epoch, 2, b, self.rank))
            x = self.dataset.transform(self._images[idx], generator=gen, augment=self.augment)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self._labels[idx]

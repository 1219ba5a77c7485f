"""Batch-level MixUp and CutMix (timm's ``--mixup`` / ``--cutmix``), through torchvision.transforms.v2.

MixUp (Zhang et al., 2018) blends each image with the one before it in the batch,
``x = lam * x_i + (1 - lam) * x_j`` with ``lam ~ Beta(alpha, alpha)``; CutMix (Yun et al., 2019)
pastes a box of ``x_j`` into ``x_i`` and sets ``lam`` to the area kept. The target is the same
blend of the two one-hot labels. Every draw comes from PyTorch's global generator, so a seeded run
is reproducible and ``--resume`` (which restores that generator) continues it exactly.
"""
from __future__ import annotations

from typing import Tuple

import torch

__all__ = ["BatchMixer"]


class BatchMixer:
    """``(x, y) -> (x, target)``: with probability ``prob`` the batch is mixed (MixUp or CutMix,
    CutMix with probability ``switch_prob`` when both are on) and ``target`` is a ``(B, classes)``
    probability tensor; otherwise ``x`` and the class indices ``y`` come back as they were.
    ``nn.CrossEntropyLoss`` (with its label smoothing) takes either kind of target."""

    def __init__(self, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5) -> None:
        from torchvision.transforms import v2

        if mixup < 0 or cutmix < 0:
            raise ValueError(f"mixup and cutmix alphas must be >= 0, got {mixup}, {cutmix}")
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError(f"prob and switch_prob must be in [0, 1], got {prob}, {switch_prob}")
        self.mixup = v2.MixUp(alpha=mixup, num_classes=num_classes) if mixup > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix, num_classes=num_classes) if cutmix > 0 else None
        self.prob, self.switch_prob = float(prob), float(switch_prob)

    @property
    def enabled(self) -> bool:
        return (self.mixup is not None or self.cutmix is not None) and self.prob > 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.enabled or (self.prob < 1 and float(torch.rand(())) >= self.prob):
            return x, y
        if self.mixup is not None and self.cutmix is not None:
            mix = self.cutmix if float(torch.rand(())) < self.switch_prob else self.mixup
        else:
            mix = self.mixup or self.cutmix
        return mix(x, y)

    def __repr__(self) -> str:
        parts = []
        if self.mixup is not None:
            parts.append(f"mixup {self.mixup.alpha:g}")
        if self.cutmix is not None:
            parts.append(f"cutmix {self.cutmix.alpha:g}")
        if not parts:
            return "off"
        both = f", cutmix share {self.switch_prob:g}" if len(parts) == 2 else ""
        return " + ".join(parts) + f" (p {self.prob:g}{both})"

"""The training recipe: its defaults (the paper's), parameter groups, LR schedule, EMA.

Paper defaults (Ding et al., 2021, section 4.1, and the official training command):
SGD with momentum 0.9, base LR 0.1 per 256 images scaled linearly with the global batch,
cosine decay after a linear warm-up of 5 epochs, weight decay 1e-4 except on biases and
BatchNorm parameters, label smoothing 0.1, 120 epochs (A0-A2, B0, B1), batch 256.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn

__all__ = ["TrainConfig", "param_groups", "split_decay", "WarmupCosineSchedule", "lr_at", "ModelEMA",
           "recalibrate_bn", "scaled_lr", "warmup_steps_for"]


@dataclass
class TrainConfig:
    """Every knob of a training run (the CLI flags, one to one). ``batch_size`` is global."""

    arch: str
    data: str
    out: str
    data_dir: Optional[str] = None
    download: bool = False
    epochs: int = 120
    batch_size: int = 256
    lr: float = 0.1  # per 256 images (scaled by batch_size / 256 unless scale_lr is False)
    scale_lr: bool = True
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    warmup_epochs: Optional[float] = None  # None: 5, or a tenth of the schedule when that is shorter
    warmup_steps: Optional[int] = None  # overrides warmup_epochs
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    amp: str = "none"  # none | bf16 | fp16
    ema_decay: Optional[float] = None
    ema_bn_batches: int = 20  # recompute the EMA model's BN statistics over this many training batches (0: off)
    clip_grad: Optional[float] = None
    seed: int = 0
    deterministic: bool = False
    workers: Optional[int] = None
    img_size: Optional[int] = None
    in_chans: Optional[int] = None
    subset: Optional[int] = None
    val_subset: Optional[int] = None
    augment: bool = True
    reprob: float = 0.0  # random erasing probability per training image (timm's --reprob; 0: off)
    mixup: float = 0.0  # MixUp alpha (timm's --mixup; 0: off)
    cutmix: float = 0.0  # CutMix alpha (timm's --cutmix; 0: off)
    mixup_prob: float = 1.0  # probability that a batch is mixed when mixup or cutmix is on
    mixup_switch_prob: float = 0.5  # with both on: probability of CutMix instead of MixUp
    device: str = "auto"
    threads: Optional[int] = None  # CPU intra-op threads (torch.set_num_threads); None: torch's default
    channels_last: bool = False
    sync_bn: bool = False
    compile: bool = False
    resume: bool = False
    overwrite: bool = False
    stop_after: Optional[int] = None
    log_every: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    # Fields that change the numbers of a run (a resume with other values is warned about).
    RECIPE_FIELDS = ("data", "epochs", "batch_size", "lr", "scale_lr", "momentum", "nesterov", "weight_decay",
                     "warmup_epochs", "warmup_steps", "warmup_lr", "min_lr", "label_smoothing", "amp", "ema_decay",
                     "clip_grad", "seed", "img_size", "in_chans", "subset", "augment", "reprob", "mixup", "cutmix", "mixup_prob",
                     "mixup_switch_prob", "sync_bn")


def scaled_lr(base_lr: float, batch_size: int, scale: bool = True) -> float:
    """The paper's linear scaling rule: ``base_lr * batch_size / 256``."""
    return base_lr * batch_size / 256.0 if scale else base_lr


def warmup_steps_for(cfg: TrainConfig, steps_per_epoch: int) -> int:
    if cfg.warmup_steps is not None:
        return int(cfg.warmup_steps)
    epochs = cfg.warmup_epochs if cfg.warmup_epochs is not None else min(5.0, cfg.epochs / 10.0)
    return int(round(epochs * steps_per_epoch))


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def split_decay(model: nn.Module) -> Tuple[List[str], List[str]]:
    """``(decayed, not decayed)`` parameter names under the official release's rule.

    No weight decay for a key containing ``bias`` or ``bn`` (the BN of the 3x3 and 1x1
    branches, QARepVGG's post-add ``bn``) nor for any parameter of a BatchNorm module (which
    also covers the identity branch's BN, ``rbr_identity``, whose key has no ``bn`` in it).
    """
    decay, no_decay = [], []
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if _is_bn(module) or "bias" in name or "bn" in name:
                no_decay.append(name)
            else:
                decay.append(name)
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Two optimizer groups: ``weight_decay`` for conv/linear weights, 0 for biases and BN."""
    params = dict(model.named_parameters())
    decay, no_decay = split_decay(model)
    groups = [{"params": [params[n] for n in decay], "weight_decay": weight_decay},
              {"params": [params[n] for n in no_decay], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float, warmup_lr: float = 0.0,
          min_lr: float = 0.0) -> float:
    """LR of optimizer step ``step`` (0-based): linear warm-up to ``peak_lr``, then cosine to ``min_lr``.

    Warm-up: ``warmup_lr + (peak - warmup_lr) * (step + 1) / warmup_steps`` (the first step
    already moves). Then ``min + (peak - min) * (1 + cos(pi * t)) / 2`` with ``t`` going from
    0 at the end of the warm-up to 1 at ``total_steps``.
    """
    if step < warmup_steps:
        return warmup_lr + (peak_lr - warmup_lr) * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    t = min(max(t, 0.0), 1.0)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * t))


class WarmupCosineSchedule:
    """Sets every group's LR from the global step; its state is that step alone."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, peak_lr: float,
                 warmup_lr: float = 0.0, min_lr: float = 0.0) -> None:
        self.optimizer = optimizer
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.peak_lr, self.warmup_lr, self.min_lr = peak_lr, warmup_lr, min_lr
        self.step_num = 0
        self.set(0)

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.peak_lr, self.warmup_lr, self.min_lr)

    def set(self, step: int) -> float:
        self.step_num = int(step)
        lr = self.lr_at(self.step_num)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> Dict[str, Any]:
        return {"step": self.step_num, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "peak_lr": self.peak_lr, "warmup_lr": self.warmup_lr, "min_lr": self.min_lr}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.set(int(state["step"]))


class ModelEMA:
    """Exponential moving average of a model's weights *and* buffers (BN statistics).

    After every optimizer step: ``ema = decay * ema + (1 - decay) * weights`` for every float
    entry of the state dict; integer buffers (``num_batches_tracked``) are copied. The EMA
    copy is a plain model in eval mode (save it, evaluate it, export it like any other).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_sd, sd = self.module.state_dict(), model.state_dict()
        floats_e, floats_m = [], []
        for k, e in ema_sd.items():
            m = sd[k].detach()
            if e.dtype.is_floating_point:
                floats_e.append(e)
                floats_m.append(m)
            else:
                e.copy_(m)
        if floats_e:
            torch._foreach_lerp_(floats_e, floats_m, 1.0 - self.decay)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, sd: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(sd)

    def recalibrated(self, batches: Iterable[Any], num_batches: int) -> nn.Module:
        """A copy of the EMA model whose BatchNorm statistics are recomputed on ``batches``.

        The average of the running statistics is not the statistics of the averaged weights:
        when the EMA spans many epochs of a moving network (decay 0.9998 is ~21 epochs at
        234 steps per epoch) its BN buffers no longer match its weights, and the model is far
        worse than either. The copy is what is evaluated and saved; the EMA itself is left
        as it is, so a resumed run continues exactly.
        """
        model = copy.deepcopy(self.module)
        recalibrate_bn(model, batches, num_batches)
        return model


def recalibrate_bn(model: nn.Module, batches: Iterable[Any], num_batches: int) -> nn.Module:
    """Recompute every BatchNorm's running mean/var as the plain average over ``num_batches``
    of ``batches`` (``(images, labels)`` pairs or images) in training mode, the weights left
    as they are: :func:`torch.optim.swa_utils.update_bn` (SWA's BN update) on the first batches."""
    from itertools import islice

    from torch.optim.swa_utils import update_bn

    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    inputs = (b[0] if isinstance(b, (tuple, list)) else b for b in islice(batches, num_batches))
    with torch.no_grad():
        update_bn(inputs, model)
    return model

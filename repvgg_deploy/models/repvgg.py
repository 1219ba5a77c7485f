"""The RepVGG network: a stem block, four stages of blocks, global pooling and a linear head.

Attribute names (``stage0`` .. ``stage4``, ``gap``, ``linear``) are the official release's.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Type

import torch
import torch.nn as nn

from .blocks import QARepVGGBlock, RepVGGBlock
from .config import RepVGGCfg, get_config

__all__ = ["RepVGG", "create_model", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BLOCKS: Dict[str, Type[nn.Module]] = {"repvgg": RepVGGBlock, "qarepvgg": QARepVGGBlock}


class RepVGG(nn.Module):
    """A RepVGG (or QARepVGG) classifier built from a :class:`RepVGGCfg`."""

    def __init__(
        self,
        cfg: RepVGGCfg,
        num_classes: int = 1000,
        in_chans: int = 3,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        self.cfg = cfg
        self.arch = cfg.name
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.deploy = deploy
        block = _BLOCKS[cfg.block]
        groups_map = cfg.groups_map

        self.in_planes = cfg.stem_width
        self.stage0 = block(in_chans, self.in_planes, 3, stride=2, padding=1, deploy=deploy)
        self.cur_layer_idx = 1
        stages: List[nn.Sequential] = []
        for width, depth in zip(cfg.stage_widths, cfg.depths):
            blocks = []
            for i in range(depth):
                groups = groups_map.get(self.cur_layer_idx, 1)
                blocks.append(
                    block(self.in_planes, width, 3, stride=2 if i == 0 else 1, padding=1, groups=groups, deploy=deploy)
                )
                self.in_planes = width
                self.cur_layer_idx += 1
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.gap = nn.AdaptiveAvgPool2d(output_size=1)
        self.num_features = cfg.num_features
        self.linear = nn.Linear(cfg.num_features, num_classes)

    @property
    def stages(self) -> Sequence[nn.Module]:
        return (self.stage0, self.stage1, self.stage2, self.stage3, self.stage4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.gap(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def create_model(
    arch: str,
    deploy: bool = False,
    num_classes: int = 1000,
    in_chans: int = 3,
    **cfg_overrides,
) -> RepVGG:
    """Build a model by name (``A0``, ``RepVGG-B2g4``, ``repvgg_b3``, ``QA-A0`` ...).

    ``deploy=True`` builds the fused form directly (one 3x3 conv per block), the shape a
    deploy-form checkpoint loads into. Extra keyword arguments override config fields.
    """
    cfg = get_config(arch, **cfg_overrides)
    return RepVGG(cfg, num_classes=num_classes, in_chans=in_chans, deploy=deploy)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def block_list(model: nn.Module) -> List[nn.Module]:
    """Every RepVGG/QARepVGG block of ``model``, in order."""
    return [m for m in model.modules() if isinstance(m, (RepVGGBlock, QARepVGGBlock))]


def model_default_cfg(model: nn.Module) -> Dict[str, object]:
    """Input conventions of a model: mean/std per channel (ImageNet for 3 channels)."""
    in_chans = getattr(model, "in_chans", 3)
    mean: Optional[Sequence[float]] = IMAGENET_MEAN if in_chans == 3 else (0.5,) * in_chans
    std: Optional[Sequence[float]] = IMAGENET_STD if in_chans == 3 else (0.5,) * in_chans
    return {"mean": list(mean), "std": list(std)}

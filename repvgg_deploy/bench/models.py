"""Model sources of the benchmark: the project's RepVGG family and torchvision baselines.

Names (any case; ``-``, ``_`` and ``.`` are interchangeable):

- RepVGG / QARepVGG, fused (deploy) form: ``repvgg-a0`` (default form), ``RepVGG-B1g4``, ``qarepvgg-a0``
- the same in training (multi-branch) form: ``repvgg-a0-train``, ``qarepvgg-a0-train``
- torchvision baselines (``weights=None``: random weights, nothing is downloaded): ``resnet18``,
  ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``, ``resnext50_32x4d``, ``resnext101_32x4d``,
  ``resnext101_32x8d``, ``vgg16``, ``efficientnet_b0``, ``efficientnet_b3``, ``regnet_x_3_2gf``,
  ``regnet_x_12gf``; the paper's names (``ResNet-50``, ``ResNeXt-50``, ``VGG-16``,
  ``EfficientNet-B0``, ``RegNetX-3.2GF`` ...) map to them.

``ResNeXt-101`` of the paper's Table 4 (44.10 M parameters, 8.0 G multiply-adds) is the 32x4d
variant. torchvision ships only 32x8d (88.8 M, 16.5 G) as a registered model, so
``resnext101_32x4d`` is built from torchvision's own ``ResNet`` class with ``groups=32,
width_per_group=4`` (not hand-written) and is what ``ResNeXt-101`` maps to. Likewise torchvision
registers RegNetX 8GF and 16GF but not the paper's 12GF: ``regnet_x_12gf`` is torchvision's
``RegNet`` with pycls's RegNetX-12GF parameters (depth 19, w0 168, wa 73.36, wm 2.37, group
width 112: 46.1 M parameters, 12.1 G multiply-adds, as in the paper's Table 5).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch.nn as nn

from ..errors import UnknownArchError, UserError
from ..models.config import ARCHS
from ..reference import paper_row, paper_table

__all__ = ["ModelSpec", "resolve_model", "known_models", "paper_table4_models", "build_model", "model_top1"]


@dataclass(frozen=True)
class ModelSpec:
    key: str  # canonical name: repvgg-a0, repvgg-a0-train, resnet50 ...
    display: str  # RepVGG-A0, RepVGG-A0 (train form), ResNet-50 ...
    family: str  # "repvgg" | "torchvision"
    paper_name: Optional[str] = None  # the row name in the paper's tables, if any
    arch: Optional[str] = None  # RepVGG canonical arch (RepVGG-A0) or torchvision builder name
    fused: bool = False  # RepVGG in deploy form (one 3x3 conv per block)

    @property
    def is_repvgg(self) -> bool:
        return self.family == "repvgg"


# torchvision builder name -> (display name, paper name)
_TORCHVISION: Dict[str, tuple] = {
    "resnet18": ("ResNet-18", "ResNet-18"),
    "resnet34": ("ResNet-34", "ResNet-34"),
    "resnet50": ("ResNet-50", "ResNet-50"),
    "resnet101": ("ResNet-101", "ResNet-101"),
    "resnet152": ("ResNet-152", "ResNet-152"),
    "resnext50_32x4d": ("ResNeXt-50 (32x4d)", "ResNeXt-50"),
    "resnext101_32x4d": ("ResNeXt-101 (32x4d)", "ResNeXt-101"),
    "resnext101_32x8d": ("ResNeXt-101 (32x8d)", None),
    "vgg16": ("VGG-16", "VGG-16"),
    "efficientnet_b0": ("EfficientNet-B0", "EfficientNet-B0"),
    "efficientnet_b3": ("EfficientNet-B3", "EfficientNet-B3"),
    "regnet_x_3_2gf": ("RegNetX-3.2GF", "RegNetX-3.2GF"),
    "regnet_x_12gf": ("RegNetX-12GF", "RegNetX-12GF"),
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.\s]", "", name.strip().lower())


def _registry() -> Dict[str, ModelSpec]:
    reg: Dict[str, ModelSpec] = {}
    for arch, cfg in ARCHS.items():
        slug = cfg.slug  # repvgg-a0, qarepvgg-b1g4
        paper = arch if paper_row(arch) is not None else None
        reg[slug] = ModelSpec(slug, arch, "repvgg", paper, arch, fused=True)
        reg[f"{slug}-train"] = ModelSpec(f"{slug}-train", f"{arch} (train form)", "repvgg", paper, arch, fused=False)
    for key, (display, paper) in _TORCHVISION.items():
        reg[key] = ModelSpec(key, display, "torchvision", paper, key)
    return reg


_REGISTRY = _registry()
_ALIASES: Dict[str, str] = {}
for _key, _spec in _REGISTRY.items():
    _ALIASES[_norm(_key)] = _key
    if _spec.family == "torchvision":
        _ALIASES[_norm(_spec.display)] = _key
        if _spec.paper_name:
            _ALIASES[_norm(_spec.paper_name)] = _key
_ALIASES.update({"resnext101": "resnext101_32x4d", "regnetx3.2gf": "regnet_x_3_2gf", "regnetx32gf": "regnet_x_3_2gf"})


def known_models() -> List[str]:
    return list(_REGISTRY)


def _known_text() -> str:
    fused = [k for k, s in _REGISTRY.items() if s.family == "repvgg" and s.fused and not k.startswith("qa")]
    tv = [k for k, s in _REGISTRY.items() if s.family == "torchvision"]
    return (f"{', '.join(fused)}; qarepvgg-<size> for QARepVGG; add -train for the training form "
            f"(e.g. repvgg-a0-train); torchvision: {', '.join(tv)}")


def resolve_model(name: str) -> ModelSpec:
    """The spec for any accepted spelling; an unknown name lists the known ones."""
    raw = name.strip()
    train = False
    m = re.match(r"^(.*?)[-_ ]?(?:\(?train(?:ing)?(?: form)?\)?)$", raw, re.I)
    if m and m.group(1):
        raw, train = m.group(1), True
    key = _ALIASES.get(_norm(raw))
    if key is None:
        # RepVGG spellings the project accepts: A0, RepVGG-A0, repvgg_a0, QA-A0 ...
        from ..models.config import resolve_arch

        try:
            key = ARCHS[resolve_arch(raw)].slug
        except UnknownArchError:
            key = None
    if key is None:
        raise UnknownArchError(f"unknown model {name!r}; known: {_known_text()}")
    spec = _REGISTRY[key]
    if train:
        if not spec.is_repvgg:
            raise UserError(f"{name!r}: only RepVGG models have a training form ({spec.display} has one form)")
        spec = _REGISTRY[f"{spec.key}-train"]
    return spec


def paper_table4_models() -> List[ModelSpec]:
    """The models of the paper's Table 4, in its order (RepVGG in fused form)."""
    return [resolve_model(r.model) for r in paper_table() if r.table == 4]


def model_top1(spec: ModelSpec) -> Optional[float]:
    """The paper's ImageNet top-1 for this architecture (Table 4 first, then Table 5), if it has one."""
    if not spec.paper_name:
        return None
    row = paper_row(spec.paper_name)
    return row.top1 if row else None


def _torchvision_builder(name: str) -> Callable[[], nn.Module]:
    import torchvision.models as tvm

    if name == "resnext101_32x4d":
        from torchvision.models.resnet import Bottleneck, ResNet

        return lambda: ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4)
    if name == "regnet_x_12gf":  # pycls's RegNetX-12GF; torchvision registers 8GF and 16GF only
        from torchvision.models.regnet import BlockParams, RegNet

        return lambda: RegNet(BlockParams.from_init_params(depth=19, w_0=168, w_a=73.36, w_m=2.37, group_width=112))
    fn = getattr(tvm, name)
    return lambda: fn(weights=None)


def build_model(spec: ModelSpec, num_classes: int = 1000) -> nn.Module:
    """A random-weight model in eval mode (RepVGG fused when ``spec.fused``)."""
    if spec.is_repvgg:
        from ..fuse import reparameterize_
        from ..models import create_model

        model = create_model(spec.arch, num_classes=num_classes).eval()
        if spec.fused:
            reparameterize_(model)
        return model.eval()
    if num_classes != 1000:
        raise UserError("torchvision baselines are built with 1000 classes")
    return _torchvision_builder(spec.arch)().eval()

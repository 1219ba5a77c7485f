"""Architecture configs for the RepVGG family, as dataclasses, and the registry of names.

The numbers are the paper's (Ding et al., 2021, Table 2 and section 3.4): four stages of
64/128/256/512 channels scaled by ``a`` (stages 1-3) and ``b`` (stage 4), a stem of
``min(64, 64 * a)`` channels, and optional group-wise 3x3 convs on the even layers
2, 4, ..., 26 (layer 1 is the first block of stage 1; the stem is not counted).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, List, Tuple

from ..errors import UnknownArchError

__all__ = [
    "RepVGGCfg",
    "ARCHS",
    "list_archs",
    "resolve_arch",
    "get_config",
    "arch_slug",
    "OPTIONAL_GROUPWISE_LAYERS",
]

# Layers that may be group-wise (the official release's `optional_groupwise_layers`).
OPTIONAL_GROUPWISE_LAYERS: Tuple[int, ...] = tuple(range(2, 27, 2))


@dataclass(frozen=True)
class RepVGGCfg:
    """One member of the family.

    Attributes:
        name: canonical name, e.g. ``RepVGG-A0`` or ``QARepVGG-A0``.
        depths: blocks per stage 1..4 (the stem, stage 0, is one more block).
        width_multipliers: (a, a, a, b) of the paper.
        groups: number of groups used on each layer of ``OPTIONAL_GROUPWISE_LAYERS`` (1 = dense).
        block: ``"repvgg"`` (3x3-BN + 1x1-BN + BN identity) or ``"qarepvgg"`` (QARepVGG).
    """

    name: str
    depths: Tuple[int, int, int, int]
    width_multipliers: Tuple[float, float, float, float]
    groups: int = 1
    block: str = "repvgg"
    base_widths: Tuple[int, int, int, int] = (64, 128, 256, 512)

    @property
    def stem_width(self) -> int:
        return min(64, int(64 * self.width_multipliers[0]))

    @property
    def stage_widths(self) -> Tuple[int, ...]:
        return tuple(int(c * w) for c, w in zip(self.base_widths, self.width_multipliers))

    @property
    def num_features(self) -> int:
        return self.stage_widths[-1]

    @property
    def groups_map(self) -> Dict[int, int]:
        """Layer index (1-based, stem not counted) -> groups, as in the official release."""
        if self.groups == 1:
            return {}
        return {layer: self.groups for layer in OPTIONAL_GROUPWISE_LAYERS}

    @property
    def slug(self) -> str:
        """File-name form: ``repvgg-a0``, ``repvgg-b1g4``, ``qarepvgg-a0``."""
        return self.name.lower()


_A = (2, 4, 14, 1)
_B = (4, 6, 16, 1)
_WIDTHS: Dict[str, Tuple[Tuple[int, ...], Tuple[float, ...]]] = {
    "A0": (_A, (0.75, 0.75, 0.75, 2.5)),
    "A1": (_A, (1.0, 1.0, 1.0, 2.5)),
    "A2": (_A, (1.5, 1.5, 1.5, 2.75)),
    "B0": (_B, (1.0, 1.0, 1.0, 2.5)),
    "B1": (_B, (2.0, 2.0, 2.0, 4.0)),
    "B2": (_B, (2.5, 2.5, 2.5, 5.0)),
    "B3": (_B, (3.0, 3.0, 3.0, 5.0)),
}
_GROUPED = ("B1", "B2", "B3")  # the paper's g2/g4 variants exist for these


def _build_registry() -> Dict[str, RepVGGCfg]:
    reg: Dict[str, RepVGGCfg] = {}
    for prefix, block in (("RepVGG", "repvgg"), ("QARepVGG", "qarepvgg")):
        for size, (depths, widths) in _WIDTHS.items():
            variants: List[Tuple[str, int]] = [(size, 1)]
            if size in _GROUPED:
                variants += [(f"{size}g2", 2), (f"{size}g4", 4)]
            for vname, g in variants:
                name = f"{prefix}-{vname}"
                reg[name] = RepVGGCfg(name, tuple(depths), tuple(widths), groups=g, block=block)  # type: ignore[arg-type]
    return reg


ARCHS: Dict[str, RepVGGCfg] = _build_registry()

_NAME_RE = re.compile(r"^(?:(qa)[-_]?(?:repvgg[-_]?)?|(qarepvgg)[-_]?|repvgg[-_]?)?([ab]\d(?:g[24])?)$", re.I)


def list_archs(block: str | None = None) -> List[str]:
    """Canonical names of the registered archs, optionally only one block type."""
    return [n for n, c in ARCHS.items() if block is None or c.block == block]


def resolve_arch(name: str) -> str:
    """Map any accepted spelling to the canonical name.

    Accepted (any case): ``A0``, ``RepVGG-A0``, ``repvgg_a0``, ``B1g4``; for QARepVGG:
    ``QA-A0``, ``QARepVGG-A0``, ``qarepvgg_a0``, ``qa_repvgg_a0``.
    """
    m = _NAME_RE.match(name.strip())
    if m:
        qa = bool(m.group(1) or m.group(2))
        size = m.group(3)
        canonical = f"{'QARepVGG' if qa else 'RepVGG'}-{size[0].upper()}{size[1:].lower()}"
        if canonical in ARCHS:
            return canonical
    known = ", ".join(n.split("-", 1)[1] for n in list_archs("repvgg"))
    raise UnknownArchError(
        f"unknown arch {name!r}; known: {known} (prefix QA- for the QARepVGG block, e.g. QA-A0)"
    )


def get_config(name: str, **overrides) -> RepVGGCfg:
    """The config for ``name`` (any accepted spelling), with dataclass fields overridden."""
    cfg = ARCHS[resolve_arch(name)]
    return replace(cfg, **overrides) if overrides else cfg


def arch_slug(name: str) -> str:
    return ARCHS[resolve_arch(name)].slug

"""The RepVGG paper's Table 4 and Table 5 (arXiv 2101.03697): accuracy, 1080Ti speed, params, FLOPs."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Dict, List, Optional

__all__ = ["PaperRow", "paper_table", "paper_row"]


@dataclass(frozen=True)
class PaperRow:
    table: int
    model: str
    top1: float
    speed_1080ti: float  # examples/s, PyTorch FP32, batch 128, 224x224, one GTX 1080Ti
    params_m: float  # millions (RepVGG: the fused model)
    flops_b: float  # billions of multiply-adds
    wino_muls_b: Optional[float]


@lru_cache(maxsize=1)
def paper_table() -> List[PaperRow]:
    text = resources.files(__package__).joinpath("paper_tables.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    return [
        PaperRow(int(r["table"]), r["model"], float(r["top1"]), float(r["speed_1080ti"]), float(r["params_m"]),
                 float(r["flops_b"]), float(r["wino_muls_b"]) if r["wino_muls_b"] else None)
        for r in rows
    ]


def paper_row(model: str, table: Optional[int] = None) -> Optional[PaperRow]:
    """The row for ``model`` (e.g. ``RepVGG-A0``, ``ResNet-50``); Table 4 first unless ``table`` is given."""
    key = model.lower()
    for row in sorted(paper_table(), key=lambda r: r.table):
        if row.model.lower() == key and (table is None or row.table == table):
            return row
    return None


def paper_params() -> Dict[str, float]:
    return {r.model: r.params_m for r in paper_table()}

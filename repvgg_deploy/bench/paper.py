"""The paper's Table 4 speed protocol side by side with measured speeds.

The paper (RepVGG, Table 4) measured examples/s in PyTorch, FP32, batch 128, 224x224 on one
GTX 1080Ti. Absolute numbers do not transfer between machines, so every speed is also given as
a ratio to ResNet-50 on the same machine (paper: 719 examples/s), and the ordering of the two
columns is compared with Spearman's rank correlation.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ..reference import paper_row, paper_table
from .stats import spearman

__all__ = ["PAPER_BATCH", "PAPER_IMG", "PAPER_PRECISION", "BASELINE", "paper_comparisons", "ratio"]

PAPER_BATCH = 128
PAPER_IMG = 224
PAPER_PRECISION = "fp32"
BASELINE = "ResNet-50"


def ratio(speed: Optional[float], base: Optional[float]) -> Optional[float]:
    if speed is None or not base:
        return None
    return speed / base


def paper_comparisons(records: Sequence[Dict[str, Any]], table: int = 4) -> List[Dict[str, Any]]:
    """One comparison per (backend, device, precision, batch, options) group holding Table ``table`` models."""
    names = [r.model for r in paper_table() if r.table == table]
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for rec in records:
        if rec.get("paper_name") in names and rec.get("family") != "file" and not str(rec.get("model_key", "")).endswith("-train"):
            key = (rec["backend"], rec["device"], rec["precision"], rec["batch"], rec.get("options") or "")
            groups.setdefault(key, []).append(rec)
    out = []
    base_paper = paper_row(BASELINE, table=4).speed_1080ti
    for (backend, device, precision, batch, options), recs in groups.items():
        by_name = {r["paper_name"]: r for r in recs}
        base = by_name.get(BASELINE)
        base_speed = base.get("images_per_s") if base and base.get("status") == "ok" else None
        rows = []
        for name in names:
            pr = paper_row(name, table=table)
            rec = by_name.get(name)
            speed = rec.get("images_per_s") if rec and rec.get("status") == "ok" else None
            rows.append({
                "model": name,
                "paper_top1": pr.top1,
                "paper_speed": pr.speed_1080ti,
                "paper_ratio": ratio(pr.speed_1080ti, base_paper),
                "measured_speed": speed,
                "measured_ratio": ratio(speed, base_speed),
                "paper_params_m": pr.params_m,
                "params_m": rec.get("params_m") if rec else None,
                "paper_gflops": pr.flops_b,
                "gmacs": rec.get("gmacs") if rec else None,
                "status": rec.get("status") if rec else "not run",
                "error": rec.get("error") if rec else None,
            })
        pairs = [(r["paper_speed"], r["measured_speed"]) for r in rows if r["measured_speed"]]
        notes = []
        if batch != PAPER_BATCH:
            notes.append(f"measured at batch {batch}, not the paper's {PAPER_BATCH}")
        if precision != PAPER_PRECISION:
            notes.append(f"measured in {precision}, not the paper's FP32")
        img = recs[0].get("img_size")
        if img != PAPER_IMG:
            notes.append(f"measured at {img}x{img}, not the paper's {PAPER_IMG}x{PAPER_IMG}")
        if base_speed is None:
            notes.append("ResNet-50 was not measured (or failed): no measured ratios")
        out.append({
            "table": table, "backend": backend, "device": device, "precision": precision, "batch": batch,
            "options": options, "img_size": img, "baseline": BASELINE, "baseline_paper_speed": base_paper,
            "baseline_measured_speed": base_speed, "rows": rows,
            "spearman": spearman([p for p, _ in pairs], [m for _, m in pairs]) if len(pairs) >= 3 else None,
            "pairs": len(pairs), "notes": notes,
        })
    return out

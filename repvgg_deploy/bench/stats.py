"""Summary statistics of timings, in trtexec's vocabulary.

Percentiles use linear interpolation between order statistics (NumPy's default,
``method="linear"``): the p-th percentile of ``n`` sorted values sits at rank
``(n - 1) * p / 100``. The coefficient of variation is the population standard
deviation over the mean.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

__all__ = ["percentile", "summarize", "coefficient_of_variation", "spearman", "PERCENTILES"]

PERCENTILES = (90, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    if len(values) == 0:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def coefficient_of_variation(values: Sequence[float]) -> float:
    """std / mean (population std); 0 for a single value, NaN for a zero mean."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        raise ValueError("coefficient of variation of no values")
    mean = float(a.mean())
    if mean == 0:
        return float("nan")
    return float(a.std() / mean)


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """min / mean / median / p90 / p95 / p99 / max / std / cv of ``values`` (same unit as the input)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        raise ValueError("summary of no values")
    out = {
        "min": float(a.min()),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
    }
    for q in PERCENTILES:
        out[f"p{q}"] = float(np.percentile(a, q))
    out["max"] = float(a.max())
    out["std"] = float(a.std())
    out["cv"] = coefficient_of_variation(a)
    return out


def _ranks(values: Sequence[float]) -> List[float]:
    """1-based ranks, ties get the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Spearman rank correlation of two equally long sequences (None for fewer than 3 pairs)."""
    if len(x) != len(y):
        raise ValueError("spearman needs sequences of equal length")
    if len(x) < 3:
        return None
    rx, ry = np.asarray(_ranks(list(x))), np.asarray(_ranks(list(y)))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den else None


def finite(values: Iterable[Optional[float]]) -> List[float]:
    return [v for v in values if v is not None and math.isfinite(v)]

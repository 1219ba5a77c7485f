"""How much of the CPU other processes used while we measured (Linux ``/proc/stat``).

busy time of all CPUs (user + nice + system + irq + softirq + steal) minus this process's own
CPU time (``os.times``, children included), over wall time x CPUs. A figure near 0 means the
machine was ours; 0.5 on two cores means another job kept one core busy throughout.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Tuple

__all__ = ["OtherLoad"]


def _proc_stat() -> Optional[Tuple[float, float]]:
    """(busy seconds, total seconds) of all CPUs since boot."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    if not parts or parts[0] != "cpu":
        return None
    vals = [float(v) for v in parts[1:]]
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    user, nice, system, idle, iowait, irq, softirq, steal = (vals + [0.0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy / hz, (busy + idle + iowait) / hz


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """``with OtherLoad() as o: ...``; then ``o.share`` (0..1 of all CPUs) or None where unknown."""

    def __enter__(self) -> "OtherLoad":
        self.start = (_proc_stat(), _own_cpu(), time.perf_counter())
        self.share: Optional[float] = None
        return self

    def __exit__(self, *exc) -> None:
        end = (_proc_stat(), _own_cpu(), time.perf_counter())
        if self.start[0] is None or end[0] is None:
            return
        busy = end[0][0] - self.start[0][0]
        own = end[1] - self.start[1]
        wall = end[2] - self.start[2]
        cpus = os.cpu_count() or 1
        if wall > 0:
            self.share = max(0.0, min(1.0, (busy - own) / (wall * cpus)))

"""The timing loop: warm-up, fixed-duration windows, CUDA events, interleaved rounds, matmul peak.

One *window* runs one case for at least ``duration`` seconds and ``min_iters`` iterations,
one query in flight: each iteration is timed on the host (``perf_counter``, from the call to
the end of the work: a CUDA case waits on an event recorded after its work) and, for CUDA
cases, on the GPU by a pair of CUDA events recorded around the work on the same stream.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

__all__ = ["Window", "run_window", "warm_up", "interleave", "measure_matmul_peak"]

T = TypeVar("T")


@dataclass
class Window:
    latencies_s: List[float] = field(default_factory=list)  # host time per iteration
    gpu_ms: List[float] = field(default_factory=list)  # CUDA-event time per iteration (CUDA cases)
    wall_s: float = 0.0  # from the first call to the end of the last iteration

    @property
    def iters(self) -> int:
        return len(self.latencies_s)


def interleave(items: Sequence[T], rounds: int) -> Iterator[Tuple[int, T]]:
    """(round, item) in the order A B C A B C ... : every round visits every item once, in order."""
    for r in range(rounds):
        for item in items:
            yield r, item


def warm_up(case, seconds: float, iters: int, start: int = 0) -> int:
    """Run ``case`` until both ``seconds`` have passed and ``iters`` iterations ran; return the next index."""
    i = start
    t0 = time.perf_counter()
    while (i - start) < iters or (time.perf_counter() - t0) < seconds:
        case.step(i)
        i += 1
        if case.timing == "cuda" and (i - start) % 8 == 0:
            _sync()
    if case.timing == "cuda":
        _sync()
    return i


def _sync() -> None:
    import torch

    torch.cuda.synchronize()


def run_window(case, duration: float, min_iters: int, start: int = 0, max_iters: Optional[int] = None) -> Window:
    """Time ``case`` for ``duration`` seconds and at least ``min_iters`` iterations."""
    w = Window()
    i = start
    perf = time.perf_counter
    if case.timing == "cuda":
        import torch

        ev0 = torch.cuda.Event(enable_timing=True)
        ev1 = torch.cuda.Event(enable_timing=True)
        _sync()
        t_start = perf()
        while True:
            t0 = perf()
            ev0.record()
            case.step(i)
            ev1.record()
            ev1.synchronize()
            t1 = perf()
            w.latencies_s.append(t1 - t0)
            w.gpu_ms.append(ev0.elapsed_time(ev1))
            i += 1
            if (len(w.latencies_s) >= min_iters and t1 - t_start >= duration) or (max_iters and len(w.latencies_s) >= max_iters):
                break
    else:
        t_start = perf()
        while True:
            t0 = perf()
            case.step(i)
            t1 = perf()
            w.latencies_s.append(t1 - t0)
            i += 1
            if (len(w.latencies_s) >= min_iters and t1 - t_start >= duration) or (max_iters and len(w.latencies_s) >= max_iters):
                break
    w.wall_s = t1 - t_start
    return w


def measure_matmul_peak(precision: str, n: int = 8192, seconds: float = 0.5, device: str = "cuda") -> Dict[str, float]:
    """Dense matmul TFLOP/s (2 n^3 FLOPs per product) in ``precision`` on the GPU, timed with CUDA events.

    ``fp32`` runs with TF32 off (true FP32), ``tf32`` with it on; ``fp16``/``bf16`` in that dtype
    (FP32 accumulation, PyTorch's default). The best of the timed batches is the peak.
    """
    import torch

    from ..backend.pyt import check_device, set_tf32, torch_dtype

    dev = check_device(device)
    if dev.type != "cuda":
        raise ValueError("the matmul peak is measured on a CUDA GPU")
    dtype = torch_dtype(precision)
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    set_tf32(precision == "tf32")
    try:
        g = torch.Generator(device=dev).manual_seed(0)
        a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
        b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
        c = torch.empty(n, n, device=dev, dtype=dtype)
        for _ in range(3):
            torch.mm(a, b, out=c)
        torch.cuda.synchronize()
        best = float("inf")
        per = 5
        t_end = time.perf_counter() + seconds
        while True:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            for _ in range(per):
                torch.mm(a, b, out=c)
            e1.record()
            e1.synchronize()
            best = min(best, e0.elapsed_time(e1) / 1e3 / per)
            if time.perf_counter() >= t_end:
                break
        del a, b, c
        torch.cuda.empty_cache()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    return {"precision": precision, "n": n, "seconds_per_matmul": best, "tflops": 2.0 * n ** 3 / best / 1e12}

"""Run a benchmark plan: load every target, count FLOPs, then time all cases interleaved.

Cases are grouped by batch size (ascending). Within a group every case is set up (inputs,
CUDA graphs) and warmed up, then timed in ``rounds`` rounds, A B C A B C ..., each window
preceded by a few re-warming iterations; the group's buffers and graphs are freed before the
next batch size. One failing case records its error and the others go on.
"""
from __future__ import annotations

import json
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from . import stats
from .backends import Case, Target, TorchTarget
from .measure import Window, interleave, run_window, warm_up
from .models import ModelSpec, model_top1

__all__ = ["Settings", "Row", "PlanItem", "FlopCounter", "run_benchmark", "row_record"]


@dataclass
class Settings:
    warmup_s: float = 0.5
    warmup_iters: int = 5
    duration_s: float = 2.0
    min_iters: int = 10
    rounds: int = 3
    buffers: int = 3
    rewarm_iters: int = 2
    seed: int = 0
    threads: Optional[int] = None
    peak_tflops: Optional[float] = None
    deadline: Optional[float] = None  # time.perf_counter() after which nothing new starts (--time-budget)
    measured_peaks: Dict[str, float] = field(default_factory=dict)  # precision -> TFLOP/s (CUDA rows)


@dataclass
class PlanItem:
    target: Target
    label: str  # display name of the model or file
    key: str  # canonical model name, or the file path
    spec: Optional[ModelSpec] = None
    batches: Optional[List[int]] = None  # None: the target's own (a file's static batch or profile)


@dataclass
class Row:
    item: PlanItem
    batch: int
    case: Optional[Case] = None
    windows: List[Window] = field(default_factory=list)
    error: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    macs: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.windows)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300] if isinstance(e, UserError) else f"{type(e).__name__}: {text[:300]}"


class FlopCounter:
    """Multiply-adds per image, cached by model and input size (optionally in a JSON file)."""

    def __init__(self, cache_file: Optional[Path] = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.cache_file = Path(cache_file) if cache_file else None
        self.cache: Dict[str, Any] = {}
        if self.cache_file and self.cache_file.is_file():
            try:
                self.cache = json.loads(self.cache_file.read_text())
            except (OSError, ValueError):
                self.cache = {}

    def _save(self) -> None:
        if self.cache_file:
            from ..utils.io import atomic_write_json

            try:
                atomic_write_json(self.cache_file, self.cache)
            except (OSError, UserError):
                pass

    def key(self, item: PlanItem) -> str:
        t = item.target
        if item.spec is not None:
            return f"{item.spec.key}@{t.img_size}"
        src = t.flops_source()
        if isinstance(src, (str, Path)) and Path(src).is_file():
            st = Path(src).stat()
            # "/img": static batches are divided since; older cache entries counted them B times
            return f"{Path(src).resolve()}:{st.st_size}:{int(st.st_mtime)}@{t.img_size}/img"
        return ""

    def count(self, item: PlanItem) -> Tuple[Optional[int], Optional[str]]:
        """(macs per image, note). For a PyTorch target, call before ``load()`` (it exports the CPU model)."""
        if not self.enabled:
            return None, None
        from .flops import count_macs

        t = item.target
        key = self.key(item)
        if key and key in self.cache:
            return int(self.cache[key]), None
        if item.spec is not None and t.img_size:
            from .flops import reference_macs

            ref = reference_macs(item.spec.key, t.img_size)
            if ref:
                return ref, None
        try:
            if isinstance(t, TorchTarget):
                from ..export import to_onnx_proto

                src = to_onnx_proto(t.cpu_model(), img_size=t.img_size, batch=1)
            else:
                src = t.flops_source()
            if src is None:
                return None, "no ONNX graph to count FLOPs from (put the source .onnx beside the engine)"
            macs = count_macs(src, img_size=t.img_size).macs
        except Exception as e:  # a count is a nice-to-have; the timing goes on
            return None, f"FLOPs not counted ({_first_line(e)})"
        if key:
            self.cache[key] = macs
            self._save()
        return macs, None


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="repvgg-bench", unit="window", file=sys.stderr,
                                dynamic_ncols=True, disable=None)
            except ImportError:  # pragma: no cover - a dependency
                self.bar = None

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text[:60], refresh=True)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


BUDGET = "not run: --time-budget reached"
BUDGET_NOTE = "--time-budget reached"


def _past(settings: Settings) -> bool:
    return settings.deadline is not None and time.perf_counter() >= settings.deadline


def _is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower()


def run_benchmark(plan: Sequence[PlanItem], settings: Settings, counter: Optional[FlopCounter] = None,
                  progress: bool = True, log: Callable[[str], None] = lambda s: None,
                  debug: bool = False) -> List[Row]:
    counter = counter or FlopCounter(enabled=False)
    rows: List[Row] = []
    macs_of: Dict[int, Tuple[Optional[int], Optional[str]]] = {}
    # 1. load (and count FLOPs)
    loaded: List[PlanItem] = []
    for item in plan:
        t = item.target
        if _past(settings):
            for b in item.batches or [0]:
                rows.append(Row(item, b, error=BUDGET))
            continue
        log(f"loading {item.label} ({t.backend}, {t.device}, {t.precision})")
        try:
            if isinstance(t, TorchTarget):
                macs_of[id(item)] = counter.count(item)
                t.load()
            else:
                t.load()
                macs_of[id(item)] = counter.count(item)
            arch = getattr(t, "arch", None)
            if item.spec is None and arch and arch not in item.label:
                item.label = f"{item.label} ({arch})"
            loaded.append(item)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            if debug:
                traceback.print_exc()
            for b in item.batches or [0]:
                rows.append(Row(item, b, error=f"load failed: {_first_line(e)}"))
            log(f"  {item.label}: {_first_line(e)}")
            try:
                t.unload()
            except Exception:
                pass
    for item in loaded:
        batches = item.batches or _default_batches(item.target)
        macs, note = macs_of.get(id(item), (None, None))
        for b in batches:
            row = Row(item, b, macs=macs)
            if note:
                row.notes.append(note)
            row.notes.extend(item.target.notes)
            rows.append(row)

    order = {id(item): i for i, item in enumerate(plan)}
    rows.sort(key=lambda r: (order[id(r.item)], r.batch))
    # 2. time, grouped by batch, interleaved
    runnable = [r for r in rows if r.error is None]
    bar = _Progress(len(runnable) * settings.rounds, progress)
    try:
        for batch in sorted({r.batch for r in runnable}):
            group = [r for r in runnable if r.batch == batch]
            _run_group(group, settings, bar, log, debug)
    finally:
        bar.close()
        for item in loaded:
            try:
                item.target.unload()
            except Exception:
                pass
    return rows


def _default_batches(t: Target) -> List[int]:
    prof = getattr(t, "profile", None)
    if prof:
        return [int(prof[1][0])]
    shape = getattr(t, "input_shape", None)
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return [int(shape[0])]
    return [1]


def _run_group(group: List[Row], settings: Settings, bar: _Progress, log, debug: bool) -> None:
    live: List[Row] = []
    for row in group:
        t = row.item.target
        if _past(settings):
            row.error = BUDGET
            bar.update(settings.rounds)
            continue
        bar.describe(f"set-up {row.item.label} b{row.batch}")
        try:
            row.case = t.case(row.batch)
            row.case.activate()
            row.case.setup(settings.buffers, settings.seed)
            warm_up(row.case, settings.warmup_s, settings.warmup_iters)
            row.notes.extend(row.case.notes)
            live.append(row)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            if debug:
                traceback.print_exc()
            row.error = _first_line(e)
            log(f"  {row.item.label} batch {row.batch}: {row.error}")
            _drop(row, oom=_is_oom(e))
            bar.update(settings.rounds)
    counters = {id(r): 0 for r in live}
    for rnd, row in interleave(live, settings.rounds):
        if row.error is not None:
            bar.update(1)
            continue
        if _past(settings):
            if not row.windows:
                row.error = BUDGET
            elif f"{BUDGET_NOTE} after {len(row.windows)} round(s)" not in row.notes:
                row.notes.append(f"{BUDGET_NOTE} after {len(row.windows)} round(s)")
            bar.update(1)
            continue
        bar.describe(f"round {rnd + 1}/{settings.rounds} {row.item.label} b{row.batch}")
        try:
            row.case.activate()
            i = warm_up(row.case, 0.0, settings.rewarm_iters, counters[id(row)])
            w = run_window(row.case, settings.duration_s, settings.min_iters, start=i)
            counters[id(row)] = i + w.iters
            row.windows.append(w)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            if debug:
                traceback.print_exc()
            row.error = f"round {rnd + 1}: {_first_line(e)}"
            log(f"  {row.item.label} batch {row.batch}: {row.error}")
            _drop(row, oom=_is_oom(e))
        bar.update(1)
    for row in live:
        _drop(row, oom=False)


def _drop(row: Row, oom: bool) -> None:
    if row.case is not None:
        try:
            row.case.teardown()
        except Exception:
            pass
        row.case = None


# --------------------------------------------------------------------------------------------- records
def _peak_key(precision: str, tf32: Optional[bool] = None) -> Optional[str]:
    """The matmul peak a row is compared with: its precision's, ``tf32`` for FP32 rows whose engine or
    session lets FP32 layers use TF32 tensor cores (``Target.tf32``), None for INT8 and mixed ``best``."""
    p = precision.lower()
    if "int8" in p or p == "best":
        return None
    for k in ("fp16", "bf16", "tf32", "fp32"):
        if k in p:
            return "tf32" if k == "fp32" and tf32 else k
    return None


def row_record(row: Row, settings: Settings) -> Dict[str, Any]:
    """One flat result record (the JSON/CSV row)."""
    t = row.item.target
    spec = row.item.spec
    rec: Dict[str, Any] = {
        "model": row.item.label,
        "model_key": row.item.key,
        "family": spec.family if spec else "file",
        "backend": t.backend,
        "device": t.device,
        "precision": t.precision,
        "batch": row.batch,
        "img_size": t.img_size,
        "options": t.options,
        "timing": None,
        "threads": settings.threads,
        "status": "ok" if row.ok else "failed",
        "error": row.error,
    }
    if row.ok:
        lat = [v * 1e3 for w in row.windows for v in w.latencies_s]
        gpu = [v for w in row.windows for v in w.gpu_ms]
        iters = len(lat)
        wall = sum(w.wall_s for w in row.windows)
        qps = iters / wall if wall > 0 else float("nan")
        per_round = [w.iters * row.batch / w.wall_s for w in row.windows if w.wall_s > 0]
        rec["timing"] = "cuda-events" if gpu else "host-clock"
        rec.update({"rounds": len(row.windows), "iterations": iters, "wall_s": wall,
                    "throughput_qps": qps, "images_per_s": qps * row.batch})
        for k, v in stats.summarize(lat).items():
            rec[f"latency_ms_{k}"] = v
        if gpu:
            for k, v in stats.summarize(gpu).items():
                rec[f"gpu_ms_{k}"] = v
        rec["round_images_per_s"] = per_round
        rec["round_cv"] = stats.coefficient_of_variation(per_round) if len(per_round) > 1 else None
    params = getattr(t, "params", None)
    rec["params_m"] = params / 1e6 if params else None
    rec["gmacs"] = row.macs / 1e9 if row.macs else None
    if row.ok and row.macs:
        tflops = 2.0 * row.macs * rec["images_per_s"] / 1e12
        rec["tflops"] = tflops
        peak, source = None, None
        if settings.peak_tflops:
            peak, source = settings.peak_tflops, "--peak-tflops"
        elif t.device == "cuda":
            k = _peak_key(t.precision, getattr(t, "tf32", None))
            if k and k in settings.measured_peaks:
                peak, source = settings.measured_peaks[k], f"measured {k} matmul"
        rec["peak_tflops"] = peak
        rec["peak_source"] = source
        rec["peak_fraction"] = tflops / peak if peak else None
    top1 = model_top1(spec) if spec else None
    rec["paper_top1"] = top1
    if spec and spec.paper_name:
        from ..reference import paper_row

        pr = paper_row(spec.paper_name)
        rec["paper_name"] = spec.paper_name
        rec["paper_speed_1080ti"] = pr.speed_1080ti if pr else None
    rec["notes"] = "; ".join(dict.fromkeys(row.notes)) if row.notes else ""
    for k, v in list(rec.items()):
        if isinstance(v, float) and not math.isfinite(v):
            rec[k] = None
    return rec

"""``repvgg-bench``: throughput and latency of RepVGG and baselines on PyTorch, ONNX Runtime and TensorRT.

Method: docs/benchmark.md. Exit codes: 0 every row ran; 1 some rows failed (the others are
reported); 2 bad input or nothing could be run (one ``error:`` line).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import MissingDependency, UserError
from .common import add_ort_int8_arg, nonneg_float, parse_ints, positive_float, positive_int, run_main, x64_quant_precision

PROG = "repvgg-bench"

EXAMPLES = """examples:
  repvgg-bench engines/                                  every .engine (TensorRT) and .onnx (ONNX Runtime) in a folder
  repvgg-bench --models repvgg-a0,repvgg-b2,resnet50 --backend torch --device cuda --precision fp16 --batch 1,32,128
  repvgg-bench --paper-table4 --backend torch --device cuda     the paper's Table 4 speed protocol
  repvgg-bench --models repvgg-a0,resnet18 --backend ort --device cpu --batch 1,8 --out results/run1
"""


def _precisions(text: str) -> List[str]:
    vals = [v.strip().lower() for v in text.split(",") if v.strip()]
    ok = ("fp32", "tf32", "fp16", "bf16", "int8")
    bad = [v for v in vals if v not in ok]
    if not vals or bad:
        raise argparse.ArgumentTypeError(f"precisions are {', '.join(ok)} (comma-separated); got {text!r}")
    return list(dict.fromkeys(vals))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Benchmark RepVGG and baselines: throughput, latency percentiles, FLOP/s, paper comparison.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", help=".onnx files, TensorRT .engine files, or folders holding them")
    g = p.add_argument_group("what to run")
    g.add_argument("--models", default=None,
                   help="comma-separated model names: repvgg-a0 (fused), repvgg-a0-train, qarepvgg-a0, resnet50, "
                        "ResNeXt-50, VGG-16, EfficientNet-B0, RegNetX-3.2GF ... (--list-models)")
    g.add_argument("--paper-table4", action="store_true",
                   help="the paper's Table 4 models at batch 128, FP32, 224x224, beside its top-1 and 1080Ti speeds")
    g.add_argument("--list-models", action="store_true", help="print the known model names and exit")
    g.add_argument("--backend", choices=("auto", "torch", "ort", "trt"), default="auto",
                   help="for model names (files pick theirs: .onnx -> ort, .engine -> trt); auto: trt if TensorRT and "
                        "a GPU, else torch on CUDA, else ort on CPU (the paper mode's auto is torch)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when available")
    g.add_argument("--precision", type=_precisions, default=None,
                   help="comma-separated: fp32 (default; TF32 off), tf32, fp16, bf16 (torch); engines keep their own")
    g.add_argument("--batch", type=parse_ints, default=None, help="comma-separated batch sizes (default 1; paper mode 128)")
    g.add_argument("--img-size", type=positive_int, default=None, help="input height/width for model names (default 224)")
    g = p.add_argument_group("PyTorch options")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    g.add_argument("--cuda-graphs", action="store_true", help="capture and replay CUDA graphs (torch and TensorRT, CUDA only)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--compile-mode", default=None, help="torch.compile mode (default, reduce-overhead, max-autotune ...)")
    g = p.add_argument_group("ONNX Runtime options")
    add_ort_int8_arg(g)
    g = p.add_argument_group("method")
    g.add_argument("--duration", type=positive_float, default=2.0, help="seconds per measurement window (default 2)")
    g.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds per case (default 3)")
    g.add_argument("--min-iters", type=positive_int, default=10, help="minimum iterations per window (default 10)")
    g.add_argument("--warmup", type=nonneg_float, default=0.5, help="warm-up seconds per case (default 0.5)")
    g.add_argument("--warmup-iters", type=int, default=5, help="minimum warm-up iterations per case (default 5)")
    g.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all cores)")
    g.add_argument("--buffers", type=positive_int, default=3, help="random input buffers rotated (default 3)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    g.add_argument("--time-budget", type=positive_float, default=None,
                   help="seconds from start after which no new load or window starts; rows not reached are "
                        "reported as not run (for suites with a fixed time)")
    g = p.add_argument_group("efficiency")
    g.add_argument("--peak-tflops", type=positive_float, default=None, help="peak TFLOP/s of the device, for the fraction of peak")
    g.add_argument("--measure-peak", action="store_true",
                   help="measure the GPU's dense matmul peak in each precision used (CUDA only)")
    g.add_argument("--no-flops", action="store_true", help="skip counting FLOPs (saves one ONNX export per model)")
    g.add_argument("--flops-cache", default=None, help="JSON file caching FLOP counts between runs")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="folder for report.md, results.csv, results.json and plots")
    g.add_argument("--no-plots", action="store_true", help="no PNG plots")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("-q", "--quiet", action="store_true", help="print only the result tables")
    g.add_argument("--debug", action="store_true", help="print tracebacks of failed rows")
    return p


def _warn(msg: str) -> None:
    print(f"{PROG}: warning: {msg}", file=sys.stderr)


def _resolve_backend_device(args, have_names: bool, log) -> tuple:
    from ..bench.backends import ort_cuda_available, pick_auto_backend, tensorrt_status, torch_cuda_available

    backend, device = args.backend, args.device
    if not have_names:
        log = lambda s: None  # noqa: E731 - files pick their own backend
    if backend == "auto":
        if args.paper_table4 and not args.models:
            backend = "torch"
            log(f"backend auto: torch (the paper's protocol is PyTorch)")
        elif device == "cpu":
            backend = "ort"
            log("backend auto: ort on cpu (--device cpu)")
        else:
            b, d, why = pick_auto_backend(model_names=have_names)
            if device == "cuda" and d != "cuda":
                b, d, why = "torch", "cuda", "--device cuda"
            if b == "trt" and have_names and set(args.precision or ["fp32"]) - {"fp32", "fp16"}:
                b, why = "torch", "TensorRT engines built from model names are FP32 or FP16; PyTorch runs the others"
            backend, device = b, d
            log(f"backend auto: {backend} on {device} ({why})")
    if device == "auto":
        if backend == "torch":
            device = "cuda" if torch_cuda_available() else "cpu"
        elif backend == "ort":
            device = "cuda" if ort_cuda_available() else "cpu"
        else:
            device = "cuda"
    # the backend must exist here
    if backend == "torch" and device == "cuda" and not torch_cuda_available():
        raise MissingDependency("--device cuda: PyTorch sees no CUDA GPU on this machine")
    if backend == "ort":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise MissingDependency("--backend ort needs ONNX Runtime (pip install onnxruntime)") from None
        if device == "cuda" and not ort_cuda_available():
            raise MissingDependency("--backend ort --device cuda needs the onnxruntime-gpu package "
                                    "(the installed onnxruntime has only the CPU execution provider)")
    if backend == "trt":
        if device == "cpu":
            raise UserError("--backend trt runs on a CUDA GPU, not --device cpu")
        if have_names or not args.paths:
            missing = tensorrt_status()
            if missing:
                raise MissingDependency(f"--backend trt: {missing}")
    return backend, device


def main(argv: Optional[Sequence[str]] = None) -> int:
    import time

    t_start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from ..bench.models import known_models, paper_table4_models, resolve_model

    if args.list_models:
        print("\n".join(known_models()))
        return 0
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    names = [n for n in (args.models or "").split(",") if n.strip()]
    if not (args.paths or names or args.paper_table4):
        raise UserError("nothing to benchmark: give .onnx/.engine files or folders, --models, or --paper-table4")
    specs = []
    if args.paper_table4:
        specs += paper_table4_models()
    for n in names:
        s = resolve_model(n)  # an unknown name lists the known ones
        if s not in specs:
            specs.append(s)
    if args.warmup_iters < 0:
        raise UserError("--warmup-iters must be >= 0")

    backend, device = _resolve_backend_device(args, bool(specs), log)
    threads = args.threads or os.cpu_count() or 1
    notes: List[str] = []

    # precision and option checks (before anything slow)
    from ..bench.paper import PAPER_BATCH, PAPER_PRECISION

    precisions = args.precision or ["fp32"]
    if args.paper_table4:
        if precisions != [PAPER_PRECISION]:
            raise UserError("--paper-table4 is the paper's FP32 protocol; leave out --precision (or give fp32)")
        # a --batch or --img-size override is allowed; the paper table says so (bench/paper.py)
    if specs:
        if backend == "torch":
            bad = [p for p in precisions if p == "int8"]
            if bad:
                raise UserError("--backend torch runs fp32, tf32, fp16 or bf16 (int8 is for TensorRT engines)")
            if device == "cpu":
                cuda_only = [p for p in precisions if p in ("tf32", "fp16")]
                if cuda_only:
                    raise UserError(f"--precision {cuda_only[0]} needs --device cuda (a CUDA GPU); on CPU use fp32 or bf16")
        elif backend == "trt" and set(precisions) - {"fp32", "fp16"}:
            raise UserError("--backend trt builds FP32 or FP16 engines from model names (the ONNX sets the "
                            "precision: TensorRT is strongly typed); for INT8 give .engine files")
        elif backend == "ort" and precisions != ["fp32"]:
            raise UserError("--backend ort runs the FP32 ONNX export; for fp16/bf16 use --backend torch or trt")
    if args.cuda_graphs and device != "cuda":
        raise UserError("--cuda-graphs needs --device cuda (a CUDA GPU)")
    if args.measure_peak and device != "cuda":
        raise UserError("--measure-peak needs --device cuda (a CUDA GPU): it times a matmul with CUDA events; "
                        "on CPU give --peak-tflops")
    if args.channels_last and backend != "torch":
        notes.append("--channels-last applies to PyTorch rows only")
    if args.compile and backend != "torch":
        raise UserError("--compile is for --backend torch")
    if args.cuda_graphs and backend == "ort":
        notes.append("--cuda-graphs is not used for ONNX Runtime rows")
    from ..utils.io import check_out_dir, check_writable_dir

    out = check_out_dir(args.out) if args.out else None  # checked now, made once there is something to run

    import torch

    from ..bench import backends as B
    from ..bench.discover import discover
    from ..bench.runner import FlopCounter, PlanItem, Settings, row_record, run_benchmark

    torch.set_num_threads(threads)
    workdir = tempfile.TemporaryDirectory(prefix="repvgg-bench-")
    work = Path(workdir.name)
    img = args.img_size or 224
    batches = args.batch or ([PAPER_BATCH] if args.paper_table4 else [1])
    plan: List[PlanItem] = []
    for spec in specs:
        for prec in precisions:
            if backend == "torch":
                t = B.TorchTarget(spec, device, prec, img, channels_last=args.channels_last, cuda_graphs=args.cuda_graphs,
                                  compile=args.compile, compile_mode=args.compile_mode, threads=threads)
            elif backend == "ort":
                t = B.OrtTarget(device, threads, spec=spec, img_size=img, workdir=work, x64_quant_precision=x64_quant_precision(args))
            else:
                t = B.TrtTarget(spec=spec, precision=prec, img_size=img, batches=batches, cuda_graphs=args.cuda_graphs,
                                workdir=work)
            plan.append(PlanItem(t, spec.display, spec.key, spec, list(batches)))

    skipped = []
    if args.paths:
        found, skipped = discover(args.paths)
        trt_missing = None
        for f in found:
            if f.kind == "engine":
                if args.backend in ("ort", "torch"):
                    skipped.append((str(f.path), f"a TensorRT engine (--backend {args.backend})"))
                    continue
                trt_missing = trt_missing or B.tensorrt_status()
                if trt_missing:
                    skipped.append((str(f.path), f"TensorRT engine not run: {trt_missing}"))
                    continue
                t = B.TrtTarget(path=f.path, cuda_graphs=args.cuda_graphs)
            else:
                if args.backend in ("trt", "torch"):
                    skipped.append((str(f.path), f"an ONNX file (--backend {args.backend})"))
                    continue
                ort_dev = device if backend == "ort" else ("cuda" if B.ort_cuda_available() and device == "cuda" else "cpu")
                if ort_dev == "cpu" and device == "cuda":
                    note = "ONNX files run on ONNX Runtime's CPU provider (onnxruntime-gpu is not installed)"
                    if note not in notes:
                        notes.append(note)
                t = B.OrtTarget(ort_dev, threads, path=f.path, img_size=args.img_size,
                                x64_quant_precision=x64_quant_precision(args))
            plan.append(PlanItem(t, f.path.name, str(f.path), None, list(args.batch) if args.batch else None))
        if args.precision:
            notes.append("--precision does not apply to files: each runs in its own precision")
    for path, why in skipped:
        _warn(f"skipped {path}: {why}")
    if not plan:
        what = "; ".join(f"{Path(p).name}: {why}" for p, why in skipped[:5])
        raise UserError(f"nothing could be run ({what})" if what else "nothing could be run")
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create --out folder {out}: {e.strerror or e}") from None
        check_writable_dir(out / "results.json")

    settings = Settings(warmup_s=args.warmup, warmup_iters=args.warmup_iters, duration_s=args.duration,
                        min_iters=args.min_iters, rounds=args.rounds, buffers=args.buffers, seed=args.seed,
                        threads=threads, peak_tflops=args.peak_tflops,
                        deadline=t_start + args.time_budget if args.time_budget else None)
    from ..utils.env import environment

    env = environment()
    env["load_average"] = _loadavg()
    if torch.cuda.is_available():
        env["cudnn"] = str(torch.backends.cudnn.version())
    peaks = {}
    counter = FlopCounter(Path(args.flops_cache) if args.flops_cache else None, enabled=not args.no_flops)
    log(f"{len(plan)} model(s), batches {','.join(map(str, batches)) if specs else 'per file'}; "
        f"{args.rounds} rounds x {args.duration:g} s; {threads} CPU threads")
    from ..bench.noise import OtherLoad

    try:
        with OtherLoad() as other:
            rows = run_benchmark(plan, settings, counter, progress=not (args.no_progress or args.quiet), log=log,
                                 debug=args.debug)
    finally:
        workdir.cleanup()
    env["other_cpu_share"] = other.share
    if other.share is not None and other.share > 0.1:
        notes.append(f"other processes used {100 * other.share:.0f}% of the CPU time while this ran: "
                     "expect noisy CPU figures")
    if args.measure_peak:  # after the timing (the GPU is warm; the engines' precisions are known)
        from ..bench.measure import measure_matmul_peak
        from ..bench.runner import _peak_key

        wanted = sorted({_peak_key(r.item.target.precision, getattr(r.item.target, "tf32", None))
                         for r in rows if r.ok and r.item.target.device == "cuda"} - {None})
        for prec in wanted:
            log(f"measuring the {prec} matmul peak ...")
            try:
                peaks[prec] = measure_matmul_peak(prec)["tflops"]
            except Exception as e:  # a missing peak leaves the fraction empty, the rows stand
                notes.append(f"{prec} matmul peak not measured ({str(e).splitlines()[0][:200]})")
        settings.measured_peaks = peaks
    records = [row_record(r, settings) for r in rows]
    from ..bench.paper import paper_comparisons
    from ..bench.report import paper_markdown, results_markdown, write_report

    paper = paper_comparisons(records) if args.paper_table4 else []
    doc = {
        "tool": PROG,
        "command": f"{PROG} {shlex.join(argv)}",
        "environment": env,
        "settings": {**{k: v for k, v in vars(settings).items() if k not in ("measured_peaks", "deadline")},
                     "time_budget_s": args.time_budget, "backend": backend,
                     "device": device, "img_size": img},
        "peaks": peaks,
        "results": records,
        "paper": paper,
        "skipped": skipped,
        "notes": notes,
    }
    print(results_markdown(records))
    for comp in paper:
        print()
        print(paper_markdown(comp))
    failed = [r for r in records if r["status"] != "ok"]
    for r in failed:
        _warn(f"{r['model']} ({r['backend']}, {r['precision']}, batch {r['batch'] or '?'}) failed: {r['error']}")
    if args.out:
        paths = write_report(Path(args.out), doc, plots=not args.no_plots)
        log(f"wrote {', '.join(str(p) for p in paths)}")
    if not any(r["status"] == "ok" for r in records):
        _warn("no row ran")
        return 1
    return 1 if failed else 0


def _loadavg() -> Optional[str]:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return None


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(main, PROG, argv)


if __name__ == "__main__":
    sys.exit(cli())

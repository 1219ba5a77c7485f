#!/usr/bin/env python3
"""The GPU benchmark suite: one command, a fixed time (under 8 minutes), everything in one folder.

    python tools/gpu_bench_suite.py OUT            # on the GPU machine (from the repository root or anywhere)
    python tools/gpu_bench_suite.py OUT --dry-run  # the same steps, tiny, on the CPU (checks the plumbing)

Steps (each one a ``repvgg-bench`` run in its own process with its own ``--time-budget``; one that
fails or runs out of time does not stop the others):

1. ``paper-table4``: the paper's Table 4 protocol, PyTorch CUDA FP32 (TF32 off), batch 128, 224x224,
   with the measured FP32 matmul peak.
2. ``torch-fp16``: RepVGG A0 A1 A2 B0 B1 B1g2 B1g4 B2 B2g4 B3 and ResNet-18/34/50/101/152, FP16,
   channels-last, CUDA graphs, batch 1, 32, 128, 256, with the fraction of the measured FP16 matmul peak.
3. ``ort-cuda``: ONNX Runtime CUDA rows, only if ``onnxruntime-gpu`` is importable (else a note).
4. ``trt``: TensorRT rows, only if TensorRT and ``repvgg_deploy.backend.trt`` are there: the engines
   in ``engines/`` if any, else engines built with ``build_engine`` from the model names (else a note).

Output in OUT: one folder per step (report.md, results.csv, results.json, PNGs), ``<step>.log``
(the step's stdout and stderr), ``env.txt`` (nvidia-smi, versions), ``flops-cache.json`` and
``SUMMARY.md`` (every step's status and the main tables in one page).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
SUITE_BUDGET_S = 420.0  # every step together; the suite (and tools/gpu_suite.sh's 480 s timeout) must finish within 8 minutes
REPVGG = ["repvgg-a0", "repvgg-a1", "repvgg-a2", "repvgg-b0", "repvgg-b1", "repvgg-b1g2", "repvgg-b1g4", "repvgg-b2",
          "repvgg-b2g4", "repvgg-b3"]
RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
FAST = ["--duration", "0.5", "--rounds", "2", "--min-iters", "5", "--warmup", "0.3", "--warmup-iters", "3"]
DRY = ["--duration", "0.05", "--rounds", "1", "--min-iters", "2", "--warmup", "0", "--warmup-iters", "1",
       "--img-size", "32", "--threads", "1"]


def probe(code: str) -> Optional[str]:
    """Run ``code`` in a fresh interpreter; its stdout when it exits 0, else None."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def plan_steps(out: Path, dry: bool) -> List[Dict]:
    steps: List[Dict] = []
    cache = ["--flops-cache", str(out / "flops-cache.json")]
    dev = ["--device", "cpu"] if dry else ["--device", "cuda"]
    timing = DRY if dry else FAST
    peak = [] if dry else ["--measure-peak"]
    steps.append({
        "name": "paper-table4", "budget": 150,
        "title": "Paper Table 4 protocol (PyTorch, FP32 with TF32 off, batch 128, 224x224)",
        "args": ["--paper-table4", "--backend", "torch", *dev, *timing, *peak, *cache]
                + (["--batch", "1", "--no-flops"] if dry else []),
    })
    steps.append({
        "name": "torch-fp16", "budget": 210,
        "title": "PyTorch FP16, channels-last, CUDA graphs" if not dry else "PyTorch FP32, channels-last (dry run)",
        "args": ["--models", "repvgg-a0,resnet18" if dry else ",".join(REPVGG + RESNETS), "--backend", "torch", *dev,
                 *timing, *peak, *cache]
                + (["--precision", "fp32", "--channels-last", "--batch", "1,2"] if dry else
                   ["--precision", "fp16", "--channels-last", "--cuda-graphs", "--batch", "1,32,128,256"]),
    })
    ort_gpu = probe("import onnxruntime as o; print('CUDAExecutionProvider' in o.get_available_providers())")
    if ort_gpu == "True" and not dry:
        steps.append({"name": "ort-cuda", "budget": 60, "title": "ONNX Runtime CUDA execution provider, FP32",
                      "args": ["--models", "repvgg-a0,repvgg-b0,resnet18,resnet50", "--backend", "ort", "--device", "cuda",
                               "--batch", "1,32,128", *timing, *cache]})
    else:
        steps.append({"name": "ort-cuda", "skip": "onnxruntime-gpu is not installed (onnxruntime has no "
                      "CUDAExecutionProvider here): no ONNX Runtime CUDA rows" if ort_gpu != "True" else
                      "dry run: ONNX Runtime CUDA not exercised"})
    trt_probe = probe("import tensorrt, torch, importlib; assert torch.cuda.is_available(); "
                "importlib.import_module('repvgg_deploy.backend.trt').TrtRunner; "
                "b = importlib.util.find_spec('repvgg_deploy.build') is not None and "
                "callable(getattr(importlib.import_module('repvgg_deploy.build'), 'build_engine', None)); "
                "print('build' if b else 'run', tensorrt.__version__)")
    engines = sorted(p for p in (ROOT / "engines").glob("*") if p.suffix in (".engine", ".plan"))
    if trt_probe and engines:
        steps.append({"name": "trt", "budget": 80, "title": f"TensorRT {trt_probe.split()[-1]}: engines in engines/",
                      "args": [str(ROOT / "engines"), "--cuda-graphs", *timing, *peak, *cache]})
    elif trt_probe and trt_probe.startswith("build"):
        # FP16 engines built from FP16 ONNX exports (TensorRT strongly typed: the ONNX sets the precision)
        steps.append({"name": "trt", "budget": 80, "title": f"TensorRT {trt_probe.split()[-1]}: FP16 engines built from the models",
                      "args": ["--models", "repvgg-a0,resnet18,resnet50,repvgg-b0", "--backend", "trt",
                               "--precision", "fp16", "--batch", "1,32,128", "--cuda-graphs", *timing, *peak, *cache]})
    else:
        why = ("TensorRT is not importable, or repvgg_deploy.backend.trt is missing, or no GPU" if not trt_probe else
               "TensorRT is here but there are no engines in engines/ and no repvgg_deploy.build.build_engine()")
        steps.append({"name": "trt", "skip": f"no TensorRT rows: {why}"})
    return steps


def run_step(step: Dict, out: Path, deadline: float) -> Dict:
    folder = out / step["name"]
    left = deadline - time.monotonic()
    budget = max(10.0, min(float(step["budget"]), left - 15))
    cmd = [sys.executable, "-m", "repvgg_deploy.cli.bench", *step["args"], "--time-budget", f"{budget:.0f}",
           "--no-progress", "--out", str(folder)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = out / f"{step['name']}.log"
    t0 = time.monotonic()
    print(f"[suite] {step['name']}: budget {budget:.0f} s: {shlex.join(cmd[1:])}", flush=True)
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                timeout=budget + 60).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.monotonic() - t0
    res = {"name": step["name"], "title": step["title"], "rc": rc, "wall_s": round(wall, 1), "folder": folder.name,
           "command": "repvgg-bench " + shlex.join(cmd[3:])}
    doc = folder / "results.json"
    if doc.is_file():
        res["doc"] = json.loads(doc.read_text())
    print(f"[suite] {step['name']}: exit {rc} after {wall:.0f} s", flush=True)
    return res


def write_env(out: Path) -> None:
    lines = [f"date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}"]
    for cmd in (["nvidia-smi"], ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                                 "--format=csv"], ["nproc"], ["uptime"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            lines += [f"$ {' '.join(cmd)}", r.stdout.strip()]
        except (OSError, subprocess.TimeoutExpired) as e:
            lines += [f"$ {' '.join(cmd)}", f"({e})"]
    lines.append(probe("import json, torch, torchvision, onnx, onnxruntime as o; print(json.dumps({'torch': torch.__version__, "
                       "'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), 'torchvision': "
                       "torchvision.__version__, 'onnx': onnx.__version__, 'onnxruntime': o.__version__, "
                       "'providers': o.get_available_providers()}))") or "(versions probe failed)")
    (out / "env.txt").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------- summary
def _f(v, d=3):
    sys.path.insert(0, str(ROOT))
    from repvgg_deploy.bench.report import fmt

    return fmt(v, d)


def _pivot(records, value, batches, models, fmt_fn) -> str:
    head = "| model | " + " | ".join(f"batch {b}" for b in batches) + " |"
    lines = [head, "|" + " --- |" * (len(batches) + 1)]
    for m in models:
        cells = []
        for b in batches:
            r = next((x for x in records if x["model"] == m and x["batch"] == b), None)
            cells.append(fmt_fn(r, value) if r and r.get("status") == "ok" else ("-" if r is None else "failed"))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(results: List[Dict], skipped: List[Dict], total_s: float, dry: bool) -> str:
    sys.path.insert(0, str(ROOT))
    from repvgg_deploy.bench.report import paper_markdown, results_markdown

    env = next((r["doc"]["environment"] for r in results if r.get("doc")), {})
    gpu = env.get("gpu") or {}
    v = env.get("versions", {})
    parts = ["# GPU benchmark suite" + (" (dry run on the CPU)" if dry else ""), "",
             f"- date: {env.get('date')}", f"- GPU: {gpu.get('name', 'none')} (driver {gpu.get('driver')}, CUDA "
             f"{gpu.get('cuda')}, cuDNN {env.get('cudnn')})", f"- CPU: {env.get('cpu')} ({env.get('cpu_count')} cores)",
             f"- torch {v.get('torch')}, torchvision {v.get('torchvision')}, onnxruntime {v.get('onnxruntime')}, "
             f"onnx {v.get('onnx')}, tensorrt {v.get('tensorrt', 'not installed')}",
             f"- suite wall time: {total_s:.0f} s", "", "Method: docs/benchmark.md. Each step's full report is in its folder.", "",
             "| step | exit | wall s | rows ok / all | folder |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        recs = (r.get("doc") or {}).get("results", [])
        ok = sum(1 for x in recs if x["status"] == "ok")
        parts.append(f"| {r['title']} | {r['rc']} | {r['wall_s']} | {ok} / {len(recs)} | [{r['folder']}]({r['folder']}/report.md) |")
    for s in skipped:
        parts.append(f"| {s['name']} | skipped | - | - | {s['skip']} |")
    parts.append("")
    for r in results:
        doc = r.get("doc")
        parts += [f"## {r['title']}", "", f"`{r['command']}`", ""]
        if not doc:
            parts += [f"No results (exit {r['rc']}); see {r['name']}.log.", ""]
            continue
        if doc.get("peaks"):
            parts += ["Measured matmul peaks: " + ", ".join(f"{k} {p:.1f} TFLOP/s" for k, p in doc["peaks"].items()), ""]
        recs = doc["results"]
        if doc.get("paper"):
            for comp in doc["paper"]:
                parts += [paper_markdown(comp), ""]
            parts += ["Efficiency at this protocol:", "", results_markdown(recs), ""]
        elif r["name"] == "torch-fp16" or len({x["batch"] for x in recs}) > 1:
            models = list(dict.fromkeys(x["model"] for x in recs))
            batches = sorted({x["batch"] for x in recs})
            prec = ", ".join(sorted({x["precision"] for x in recs}))
            parts += [f"Throughput, images/s ({prec}):", "", _pivot(recs, "images_per_s", batches, models,
                                                                     lambda x, k: _f(x.get(k))), ""]
            parts += ["Latency per batch, median ms (host) / GPU compute median ms:", "",
                      _pivot(recs, None, batches, models, lambda x, k: f"{_f(x.get('latency_ms_median'))} / "
                                                                       f"{_f(x.get('gpu_ms_median'))}"), ""]
            if any(x.get("peak_fraction") for x in recs):
                parts += ["Achieved TFLOP/s (2 FLOPs per multiply-add) and fraction of the measured matmul peak:", "",
                          _pivot(recs, None, batches, models, lambda x, k: f"{_f(x.get('tflops'))} "
                                 f"({100 * x['peak_fraction']:.0f}%)" if x.get("peak_fraction") else _f(x.get("tflops"))), ""]
        else:
            parts += [results_markdown(recs), ""]
        failed = [x for x in recs if x["status"] != "ok"]
        if failed:
            parts += ["Failed or not run:", ""] + [f"- {x['model']} batch {x['batch']}: {x['error']}" for x in failed] + [""]
    return "\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--dry-run", action="store_true", help="tiny CPU version of every step (no GPU needed)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    deadline = t0 + SUITE_BUDGET_S
    write_env(out)
    steps = plan_steps(out, args.dry_run)
    results, skipped = [], []
    for step in steps:
        if "skip" in step:
            print(f"[suite] {step['name']}: skipped: {step['skip']}", flush=True)
            skipped.append(step)
            continue
        if deadline - time.monotonic() < 30:
            skipped.append({"name": step["name"], "skip": "suite time budget used up"})
            continue
        results.append(run_step(step, out, deadline))
    total = time.monotonic() - t0
    text = summary_markdown(results, skipped, total, args.dry_run)
    tmp = out / ".SUMMARY.md.tmp"
    tmp.write_text(text + "\n")
    os.replace(tmp, out / "SUMMARY.md")
    print(f"[suite] done in {total:.0f} s: {out / 'SUMMARY.md'}", flush=True)
    ran = [r for r in results if r.get("doc") and any(x["status"] == "ok" for x in r["doc"]["results"])]
    return 0 if ran else 1


if __name__ == "__main__":
    sys.exit(main())

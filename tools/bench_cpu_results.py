#!/usr/bin/env python3
"""Record the CPU benchmark tables of docs/results/ on this machine (one command, a few minutes):

- docs/results/bench-cpu-ort.md: ONNX Runtime, fused RepVGG-A0/A1/B0 vs ResNet-18/34/50 and the
  training-form A0, batch 1 and 8, 224x224 FP32;
- docs/results/bench-cpu-torch.md: PyTorch eager, training vs fused form of A0 and B1, batch 1 and 8.

    python tools/bench_cpu_results.py [--duration 1 --rounds 3] [--only ort|torch]

Each table is written with its command, the machine (lscpu), the threads, the date and the load
average before and after (a shared machine: other jobs may have been running).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repvgg_deploy.utils.env import loadavg, lscpu_model  # noqa: E402

RUNS = {
    "ort": {
        "doc": "bench-cpu-ort.md",
        "title": "ONNX Runtime on this CPU: fused RepVGG vs ResNet, and the training form",
        "args": ["--models", "repvgg-a0,repvgg-a1,repvgg-b0,resnet18,resnet34,resnet50,repvgg-a0-train",
                 "--backend", "ort", "--device", "cpu", "--batch", "1,8"],
        "pairs": [("repvgg-a0", "resnet18"), ("repvgg-a1", "resnet18"), ("repvgg-a1", "resnet34"),
                  ("repvgg-b0", "resnet34"), ("repvgg-b0", "resnet50"), ("repvgg-a0", "repvgg-a0-train")],
    },
    "torch": {
        "doc": "bench-cpu-torch.md",
        "title": "PyTorch eager on this CPU: training form vs fused form",
        "args": ["--models", "repvgg-a0,repvgg-a0-train,repvgg-b1,repvgg-b1-train", "--backend", "torch",
                 "--device", "cpu", "--batch", "1,8"],
        "pairs": [("repvgg-a0", "repvgg-a0-train"), ("repvgg-b1", "repvgg-b1-train")],
    },
}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def table(doc: dict, pairs) -> str:
    from repvgg_deploy.bench.report import fmt

    recs = [r for r in doc["results"] if r["status"] == "ok"]
    lines = ["| model | form | precision | batch | images/s | latency mean ms | median | p90 | p99 | min | CV | "
             "rounds CV | GMACs/img | GFLOP/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(recs, key=lambda r: (r["batch"], doc["results"].index(r))):
        form = "training (unfused)" if r["model_key"].endswith("-train") else ("fused" if r["family"] == "repvgg" else "-")
        lines.append(f"| {r['model'].replace(' (train form)', '')} | {form} | {r['precision']} | {r['batch']} | "
                     f"{fmt(r['images_per_s'])} | {fmt(r['latency_ms_mean'])} | {fmt(r['latency_ms_median'])} | "
                     f"{fmt(r['latency_ms_p90'])} | {fmt(r['latency_ms_p99'])} | {fmt(r['latency_ms_min'])} | "
                     f"{100 * r['latency_ms_cv']:.1f}% | {_pct(r.get('round_cv'))} | "
                     f"{fmt(r['gmacs'])} | {fmt(r['tflops'] * 1e3 if r.get('tflops') else None)} |")
    by = {(r["model_key"], r["batch"]): r for r in recs}
    names = {r["model_key"]: r["model"] for r in recs}
    lines += ["", "| comparison | batch | images/s ratio | median latency ratio (second / first) |", "| --- | --- | --- | --- |"]
    for a, b in pairs:
        for batch in sorted({r["batch"] for r in recs}):
            ra, rb = by.get((a, batch)), by.get((b, batch))
            if ra and rb:
                lines.append(f"| {names[a]} vs {names[b]} | {batch} | {ra['images_per_s'] / rb['images_per_s']:.2f}x | "
                             f"{rb['latency_ms_median'] / ra['latency_ms_median']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--only", choices=sorted(RUNS), default=None)
    p.add_argument("--docs", default=str(ROOT / "docs" / "results"))
    args = p.parse_args(argv)
    from repvgg_deploy.cli.bench import main as bench_main
    from repvgg_deploy.utils.io import atomic_write_text

    Path(args.docs).mkdir(parents=True, exist_ok=True)
    for name, run in RUNS.items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            bench_args = run["args"] + ["--duration", str(args.duration), "--rounds", str(args.rounds),
                                        "--min-iters", str(args.min_iters), "--no-progress", "--out", tmp]
            before = loadavg()
            rc = bench_main(bench_args)
            after = loadavg()
            doc = json.loads((Path(tmp) / "results.json").read_text())
        env, s = doc["environment"], doc["settings"]
        v = env["versions"]
        shown = [a for a in bench_args if a != tmp]
        shown = shown[:shown.index("--out")] + ["--out", f"results/{name}"] if "--out" in shown else shown
        text = "\n".join([
            f"# {run['title']}",
            "",
            f"- command: `repvgg-bench {shlex.join(shown)}` (run by `python tools/bench_cpu_results.py"
            f"{' --only ' + name if args.only else ''}`; exit {rc})",
            f"- machine: {lscpu_model()}, {os.cpu_count()} cores (lscpu); {s['threads']} threads for every row",
            f"- date: {env['date']}",
            f"- load average (1/5/15 min) before / after: {before} -> {after}; other processes used "
            f"{_pct(env.get('other_cpu_share'))} of the CPU time during the measurement (a shared VM; the rounds are "
            "interleaved so that what noise there is hits every model alike).",
            f"- torch {v.get('torch')}, torchvision {v.get('torchvision')}, onnxruntime {v.get('onnxruntime')}, onnx "
            f"{v.get('onnx')}, numpy {v.get('numpy')}, python {v.get('python')}",
            f"- method: warm-up {s['warmup_s']} s and >= {s['warmup_iters']} iterations, then {s['rounds']} interleaved "
            f"rounds of >= {s['duration_s']} s and >= {s['min_iters']} iterations per model and batch; 224x224, FP32, "
            "random N(0,1) inputs, random weights (docs/benchmark.md). GFLOP/s counts 2 FLOPs per multiply-add.",
            "",
            table(doc, run["pairs"]),
            "",
        ])
        atomic_write_text(Path(args.docs) / run["doc"], text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

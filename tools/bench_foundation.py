#!/usr/bin/env python3
"""Two figures the foundation issue asks for, measured on this machine, written to
docs/results/foundation-speed.md:

1. ONNX Runtime CPU latency of the fused RepVGG-A0 against the training-form A0 exported unfused
   (batch 1 and 8, 224x224, FP32), and their ratio. Timed by ``repvgg-bench`` (interleaved rounds).
2. Fuse + export + verify of RepVGG-B3 (224x224, FP32): seconds per step, from
   ``export_with_report`` (fuse, ONNX export, onnx.checker, plain-body verification, ONNX Runtime
   comparison with the training form), plus building the model.

    python tools/bench_foundation.py                      # defaults: --duration 1 --rounds 3
    python tools/bench_foundation.py --out /tmp/x.md --duration 0.5 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repvgg_deploy.utils.env import loadavg, lscpu_model  # noqa: E402


def ort_fused_vs_train(duration: float, rounds: int, threads: int, work: Path) -> dict:
    from repvgg_deploy.cli.bench import main as bench_main

    out = work / "ort-a0"
    argv = ["--models", "repvgg-a0,repvgg-a0-train", "--backend", "ort", "--device", "cpu", "--batch", "1,8",
            "--duration", str(duration), "--rounds", str(rounds), "--threads", str(threads), "--no-progress",
            "--no-plots", "--out", str(out)]
    t0 = time.perf_counter()
    rc = bench_main(argv)
    wall = time.perf_counter() - t0
    doc = json.loads((out / "results.json").read_text())
    return {"rc": rc, "argv": argv, "wall_s": wall, "results": doc["results"], "environment": doc["environment"]}


def b3_fuse_export_verify(work: Path) -> dict:
    import torch

    from repvgg_deploy.cli.export import randomize_bn_
    from repvgg_deploy.export import export_with_report
    from repvgg_deploy.models import create_model

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = randomize_bn_(create_model("B3").eval())
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = export_with_report(model, work / "repvgg-b3.onnx", img_size=224)
    total_s = time.perf_counter() - t1
    return {"build_s": build_s, "timings": res.report["timings"], "pipeline_s": total_s,
            "onnx_mb": res.report["onnx_bytes"] / 1e6, "verify": res.report["verify"]["ok"],
            "max_rel_err": res.report["compare"]["max_rel_err"], "params": res.report["params_after_fusion"]}


def markdown(cmd: str, ort: dict, b3: dict, cpu: str, threads: int, load_before: str, load_after: str) -> str:
    env = ort["environment"]
    share = env.get("other_cpu_share")
    other_share = "an unknown share" if share is None else f"{100 * share:.0f}%"
    v = env["versions"]
    by = {(r["model_key"], r["batch"]): r for r in ort["results"]}
    lines = [
        "# Foundation figures on this machine",
        "",
        f"- command: `{cmd}`",
        f"- machine: {cpu}, {os.cpu_count()} cores (lscpu), {threads} threads used; a shared VM: other jobs may "
        f"have been running (load average 1/5/15 min before / after: {load_before} -> {load_after}; other processes "
        f"used {other_share} of the CPU time during the ONNX Runtime timing)",
        f"- date: {env['date']}",
        f"- torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, onnx {v.get('onnx')}, python {v.get('python')}",
        "",
        "## ONNX Runtime CPU latency: fused RepVGG-A0 vs the training form exported unfused",
        "",
        "224x224, FP32, ONNX Runtime CPU execution provider; both exported by `export_onnx` (fused: `fuse=True`; "
        "training form: `fuse=False`, BatchNorm and the 1x1/identity branches left in the graph); timed by "
        f"`repvgg-bench` in {ort['results'][0].get('rounds')} interleaved rounds (docs/benchmark.md). Latency in ms.",
        "",
        "| batch | fused mean | fused median | fused p90 | train-form mean | train-form median | train-form p90 | "
        "ratio train / fused (median) | ratio (mean) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in (1, 8):
        f, t = by.get(("repvgg-a0", b)), by.get(("repvgg-a0-train", b))
        if not f or not t or f["status"] != "ok" or t["status"] != "ok":
            lines.append(f"| {b} | failed | | | | | | | |")
            continue
        lines.append(
            f"| {b} | {f['latency_ms_mean']:.2f} | {f['latency_ms_median']:.2f} | {f['latency_ms_p90']:.2f} | "
            f"{t['latency_ms_mean']:.2f} | {t['latency_ms_median']:.2f} | {t['latency_ms_p90']:.2f} | "
            f"**{t['latency_ms_median'] / f['latency_ms_median']:.2f}x** | "
            f"{t['latency_ms_mean'] / f['latency_ms_mean']:.2f}x |")
    g_f, g_t = by.get(("repvgg-a0", 1), {}).get("gmacs"), by.get(("repvgg-a0-train", 1), {}).get("gmacs")
    if g_f and g_t:
        lines += ["", f"Multiply-adds per image: fused {g_f:.3f} G, training form {g_t:.3f} G "
                      f"({g_t / g_f:.2f}x; the training form also runs BatchNorm and the branch additions)."]
    t = b3["timings"]
    lines += [
        "",
        "## Fuse + export + verify of RepVGG-B3",
        "",
        f"224x224, FP32, random weights with random BatchNorm statistics; `export_with_report` (what `repvgg-export` "
        f"runs). {b3['params'] / 1e6:.1f} M parameters after fusion, ONNX file {b3['onnx_mb']:.0f} MB; plain body: "
        f"{b3['verify']}; ONNX Runtime vs the PyTorch training form: max relative error {b3['max_rel_err']:.2g}.",
        "",
        "| step | seconds |",
        "| --- | --- |",
        f"| build the training-form model (not part of the pipeline) | {b3['build_s']:.2f} |",
        f"| fuse (structural re-parameterization) | {t.get('fuse_s', 0):.2f} |",
        f"| export to ONNX (torch.onnx, dynamo) | {t.get('export_s', 0):.2f} |",
        f"| onnx.checker | {t.get('check_s', 0):.2f} |",
        f"| verify the plain body (graphsurgeon) | {t.get('verify_s', 0):.2f} |",
        f"| compare ONNX Runtime with PyTorch (4 images) | {t.get('compare_s', 0):.2f} |",
        f"| **fuse + export + verify** (fuse, export, check, verify) | "
        f"**{sum(t.get(k, 0) for k in ('fuse_s', 'export_s', 'check_s', 'verify_s')):.2f}** |",
        f"| whole `export_with_report` (adds the comparison and writing) | {b3['pipeline_s']:.2f} |",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "foundation-speed.md"))
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    cmd = "python tools/bench_foundation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-foundation-") as tmp:
        work = Path(tmp)
        ort = ort_fused_vs_train(args.duration, args.rounds, args.threads, work)
        b3 = b3_fuse_export_verify(work)
    from repvgg_deploy.utils.io import atomic_write_text

    text = markdown(cmd.strip(), ort, b3, lscpu_model(), args.threads, load_before, loadavg())
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The precision table of docs/results/precision.md: accuracy of RepVGG-A0 and QA-A0 in PyTorch
FP32, fused FP32 ONNX, FP16 ONNX and INT8 ONNX (each calibration method), and ONNX Runtime
speed of FP32 vs INT8 on this CPU.

Every accuracy comes from `repvgg-eval` (ONNX files through ONNX Runtime on the CPU) and every
file from `repvgg-export`, run as commands, so the table is what a user gets:

    python tools/precision_table.py --a0 runs/a0/best.pth --qa runs/qa-a0/best.pth \
        --out docs/results/precision.md

Speed: `repvgg-bench` on the fused FP32 and the INT8 (percentile) ONNX of A0, batch 1 and 32, at the
trained model's 32x32 and, for reference, an ImageNet-size (224x224, 3-channel) random-weight A0.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("minmax", "entropy", "percentile")


def run(cmd: List[str], log: List[str]) -> subprocess.CompletedProcess:
    shown = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {shown}", file=sys.stderr, flush=True)
    log.append(shown)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {shown}\n{r.stderr[-2000:]}")
    return r


def cli(name: str) -> List[str]:
    module = {"export": "repvgg_deploy.cli.export", "eval": "repvgg_deploy.cli.eval", "bench": "repvgg_deploy.cli.bench"}[name]
    return [sys.executable, "-m", module]


def evaluate(model: Path, data: str, log: List[str], compare_with: Optional[Path] = None) -> Dict:
    cmd = cli("eval") + [str(model), "--data", data, "--json"]
    if compare_with is not None:
        cmd += ["--compare-with", str(compare_with)]
    return json.loads(run(cmd, log).stdout)


def model_rows(name: str, ckpt: Path, work: Path, data: str, calib_images: int, log: List[str]) -> List[Dict]:
    rows: List[Dict] = []
    fp32 = work / f"{name}.onnx"
    run(cli("export") + [str(ckpt), "-o", str(fp32), "-q"], log)
    torch_res = evaluate(ckpt, data, log, compare_with=fp32)
    rows.append({"model": name, "variant": "PyTorch FP32 (training form)", "top1": torch_res["top1"],
                 "top5": torch_res["top5"], "n": torch_res["n"], "agree": None, "err": None})
    onnx_res = torch_res["compare"]
    rows.append({"model": name, "variant": "ONNX FP32 (fused)", "top1": onnx_res["top1"], "top5": onnx_res["top5"],
                 "n": onnx_res["n"], "agree": torch_res["agreement"], "err": _report_err(fp32)})
    variants = [("fp16", ["--precision", "fp16"], "ONNX FP16")]
    variants += [(f"int8-{m}", ["--precision", "int8", "--calib", data, "--calib-images", str(calib_images),
                                "--calib-method", m], f"ONNX INT8 ({m}{', 99.99' if m == 'percentile' else ''}, "
                  f"{calib_images} images)") for m in METHODS]
    # Sensitivity to the calibration set: more images widen min-max ranges to rarer outliers.
    variants += [(f"int8-{m}-2048", ["--precision", "int8", "--calib", data, "--calib-images", "2048",
                                     "--calib-method", m], f"ONNX INT8 ({m}{', 99.99' if m == 'percentile' else ''}, 2048 images)")
                 for m in ("minmax", "percentile")]
    for suffix, flags, label in variants:
        path = work / f"{name}-{suffix}.onnx"
        run(cli("export") + [str(ckpt), "-o", str(path), "-q"] + flags, log)
        res = evaluate(path, data, log, compare_with=fp32)
        rows.append({"model": name, "variant": label, "top1": res["top1"], "top5": res["top5"], "n": res["n"],
                     "agree": res["agreement"], "err": _report_err(path)})
    return rows


def _report_err(onnx_path: Path) -> Dict:
    rep = json.loads(onnx_path.with_suffix(".json").read_text())["compare"]
    return {"max_abs_err": rep["max_abs_err"], "max_rel_err": rep["max_rel_err"], "inputs": rep["inputs"]}


def speed_rows(a0_ckpt: Path, work: Path, log: List[str], duration: float, rounds: int) -> List[Dict]:
    """repvgg-bench (ONNX Runtime, CPU) on FP32 and INT8 A0 files, batch 1 and 32."""
    out: List[Dict] = []
    big = work / "speed224"
    big.mkdir(exist_ok=True)
    run(cli("export") + ["--arch", "A0", "--random-init", "-o", str(big / "a0-224.onnx"), "-q"], log)
    run(cli("export") + ["--arch", "A0", "--random-init", "-o", str(big / "a0-224-int8.onnx"), "-q",
                         "--precision", "int8", "--calib", "fake", "--calib-images", "64"], log)
    small = work / "speed32"
    small.mkdir(exist_ok=True)
    for src, dst in ((work / "a0.onnx", small / "a0-32.onnx"), (work / "a0-int8-percentile.onnx", small / "a0-32-int8.onnx")):
        dst.write_bytes(src.read_bytes())
    for folder in (small, big):
        res_dir = folder / "bench"
        run(cli("bench") + [str(folder), "--batch", "1,32", "--duration", str(duration), "--rounds", str(rounds),
                            "--out", str(res_dir)], log)
        out.extend(json.loads((res_dir / "results.json").read_text())["results"])
    return out


def fmt(v: Optional[float], spec: str = ".2f", suffix: str = "") -> str:
    return "" if v is None else f"{v:{spec}}{suffix}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a0", type=Path, required=True, help="RepVGG-A0 checkpoint trained by repvgg-train")
    p.add_argument("--qa", type=Path, required=True, help="QARepVGG-A0 checkpoint, same recipe and epochs")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--calib-images", type=int, default=512)
    p.add_argument("--work", type=Path, default=ROOT / "results" / "precision")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "precision.md")
    p.add_argument("--recipe", default="", help="how the checkpoints were trained (the repvgg-train command), for the record")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-speed", action="store_true")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    log: List[str] = []
    t0 = time.time()
    rows = model_rows("a0", args.a0, args.work, args.data, args.calib_images, log)
    rows += model_rows("qa-a0", args.qa, args.work, args.data, args.calib_images, log)
    speed = [] if args.no_speed else speed_rows(args.a0, args.work, log, args.duration, args.rounds)
    from repvgg_deploy.utils.env import cpu_model, versions
    from repvgg_deploy.utils.io import atomic_write_text

    atomic_write_text(args.work / "precision.json", json.dumps({"rows": rows, "speed": speed}, indent=2))

    v = versions()
    lines = [
        "# Precision: accuracy of FP32, FP16 and INT8 on Fashion-MNIST, and INT8 speed on the CPU",
        "",
        f"Measured {dt.date.today().isoformat()} on this project's development machine: {cpu_model()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, torch {v.get('torch')}, "
        f"onnxruntime {v.get('onnxruntime')}, onnx {v.get('onnx')}. Produced by:",
        "",
        "```bash",
        " ".join(shlex.quote(a) for a in ["python", "tools/precision_table.py"] + sys.argv[1:]),
        "```",
        "",
    ]
    if args.recipe:
        lines += ["Both checkpoints were trained by `repvgg-train` with the same recipe and epochs:", "", "```bash",
                  args.recipe, "```", ""]
    lines += [
        "Accuracy: the 10,000 Fashion-MNIST test images, every figure from `repvgg-eval` (PyTorch for the "
        "checkpoint, ONNX Runtime CPU for the ONNX files). *Agreement*: identical top-1 predictions with the "
        "fused FP32 ONNX on those images (for the FP32 ONNX row: with the PyTorch checkpoint). *Max rel. error*: "
        "the export's own comparison with the PyTorch FP32 model (random N(0,1) inputs for FP32/FP16, 64 real "
        "held-out images for INT8), as a fraction of the output scale.",
        "",
        "| model | variant | top-1 % | top-5 % | Δ top-1 vs PyTorch FP32 | agreement % | max rel. error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("a0", "qa-a0"):
        base = next(r for r in rows if r["model"] == name)["top1"]
        for r in (r for r in rows if r["model"] == name):
            label = {"a0": "RepVGG-A0", "qa-a0": "QARepVGG-A0"}[name]
            delta = r["top1"] - base
            lines.append(
                f"| {label} | {r['variant']} | {r['top1']:.2f} | {r['top5']:.2f} | {delta:+.2f} | "
                f"{fmt(None if r['agree'] is None else r['agree'] * 100)} | "
                f"{'' if r['err'] is None else format(r['err']['max_rel_err'], '.2e')} |"
            )
    if speed:
        lines += [
            "",
            "## ONNX Runtime speed on this CPU: FP32 vs INT8 (RepVGG-A0)",
            "",
            f"`repvgg-bench FOLDER --batch 1,32 --duration {args.duration} --rounds {args.rounds}` on the fused "
            "FP32 and INT8 (percentile) files: the trained 1x32x32 model, and a random-weight 3x224x224 A0 for the "
            "ImageNet input size. Throughput = images/s; latency = median ms per batch.",
            "",
            "| input | batch | FP32 img/s | INT8 img/s | INT8 / FP32 | FP32 median ms | INT8 median ms |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        by = {}
        for r in speed:
            if r.get("status") != "ok":
                continue
            name = Path(r["model_key"]).name
            key = ("224" if "224" in name else "32", int(r["batch"]), "int8" in name)
            by[key] = r
        for size in ("32", "224"):
            for batch in (1, 32):
                f, q = by.get((size, batch, False)), by.get((size, batch, True))
                if not f or not q:
                    continue
                fi, qi = f["images_per_s"], q["images_per_s"]
                lines.append(f"| {size}x{size} | {batch} | {fi:.0f} | {qi:.0f} | {qi / fi:.2f}x | "
                             f"{f['latency_ms_median']:.2f} | {q['latency_ms_median']:.2f} |")
    lines += ["", f"Wall time of the whole script: {time.time() - t0:.0f} s.", "", "<details><summary>Every command run</summary>",
              "", "```", *log, "```", "", "</details>", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines))
    print(args.out)


if __name__ == "__main__":
    main()

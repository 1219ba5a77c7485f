#!/usr/bin/env python3
"""Regenerate repvgg_deploy/reference/flops_224.csv: multiply-adds per image at 224x224 of every
benchmark model, counted from its ONNX graph exactly as ``repvgg-bench`` counts them.

``repvgg-bench`` reads this table for model names at 224x224 instead of exporting each model
again (an export takes seconds per model); other input sizes and files are counted on the fly.
tests/test_bench.py checks entries against fresh counts.

    python tools/count_flops.py            # all models (a few minutes on 2 CPU cores)
    python tools/count_flops.py repvgg-a0 resnet50
"""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from repvgg_deploy.bench.flops import count_macs  # noqa: E402
from repvgg_deploy.bench.models import build_model, known_models, resolve_model  # noqa: E402
from repvgg_deploy.export import to_onnx_proto  # noqa: E402
from repvgg_deploy.utils.io import atomic_write_text  # noqa: E402

OUT = ROOT / "repvgg_deploy" / "reference" / "flops_224.csv"
IMG = 224


def main(argv) -> int:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    names = argv or known_models()
    rows = {}
    if OUT.is_file():
        for r in csv.DictReader(line for line in OUT.read_text().splitlines() if not line.startswith("#")):
            rows[r["model"]] = r
    failed = []
    for name in names:
        spec = resolve_model(name)
        try:
            model = build_model(spec)
            params = sum(p.numel() for p in model.parameters())
            c = count_macs(to_onnx_proto(model, img_size=IMG, batch=1))
        except Exception as e:
            print(f"{spec.key:24s} FAILED: {e}", flush=True)
            failed.append(spec.key)
            continue
        rows[spec.key] = {"model": spec.key, "img_size": IMG, "macs": c.macs, "params": params}
        print(f"{spec.key:24s} {c.macs / 1e9:8.3f} GMACs  {params / 1e6:8.2f} M params", flush=True)
        write(rows)
    return 1 if failed else 0


def write(rows) -> None:
    buf = io.StringIO()
    buf.write("# Multiply-adds per image at 224x224 counted from each model's ONNX graph (Conv/Gemm/MatMul),\n"
              "# by tools/count_flops.py; params: PyTorch parameters of the benchmarked form.\n")
    w = csv.DictWriter(buf, fieldnames=["model", "img_size", "macs", "params"], lineterminator="\n")
    w.writeheader()
    order = {k: i for i, k in enumerate(known_models())}
    for key in sorted(rows, key=lambda k: order.get(k, 1 << 30)):
        w.writerow(rows[key])
    atomic_write_text(OUT, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

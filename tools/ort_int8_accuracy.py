#!/usr/bin/env python3
"""Top-1 of ONNX files on all 10,000 Fashion-MNIST test images under three ONNX Runtime CPU settings.

    python tools/ort_int8_accuracy.py runs/pipeline/models/a0-int8.onnx runs/pipeline/models/qa-a0-int8.onnx

For each file: its u8s8 int8 kernels (ONNX Runtime's default), its u8u8 kernels
(``session.x64quantprecision``) and graph optimizations off (each Q/DQ pair simulated in FP32, no int8
kernel). Images are pre-processed as ``repvgg-eval`` does, with the file's own size and mean/std.
"""
from __future__ import annotations

import argparse

import numpy as np
import onnx

from repvgg_deploy.backend.onnxrt.runner import session_from_onnx
from repvgg_deploy.data import build_dataset
from repvgg_deploy.export import get_metadata

SETTINGS = (("u8s8", "all", False), ("u8u8", "all", True), ("simulated", "disable", False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx", nargs="+")
    args = p.parse_args()
    print("| file | " + " | ".join(name for name, _, _ in SETTINGS) + " |")
    print("| --- |" + " --- |" * len(SETTINGS))
    for path in args.onnx:
        proto = onnx.load(path, load_external_data=False)
        meta = get_metadata(proto)
        c, h = (d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:3])
        ds = build_dataset("fashion-mnist", "val", img_size=h, in_chans=c, mean=meta.get("mean"), std=meta.get("std"))
        x = np.stack([ds[i][0].numpy() for i in range(len(ds))])
        y = np.array([ds[i][1] for i in range(len(ds))])
        row = []
        for _, level, x64 in SETTINGS:
            s = session_from_onnx(path, optimization=level, x64_quant_precision=x64)
            name = s.get_inputs()[0].name
            pred = np.concatenate([s.run(None, {name: x[i:i + 500]})[0] for i in range(0, len(x), 500)]).argmax(1)
            row.append(f"{100 * (pred == y).mean():.2f}")
        print(f"| {path} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

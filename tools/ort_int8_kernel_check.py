#!/usr/bin/env python3
"""Top-1 agreement of an INT8 (Q/DQ) ONNX with its FP32 ONNX in ONNX Runtime, with and without graph optimizations.

    python tools/ort_int8_kernel_check.py runs/pipeline/models/qa-a0.onnx runs/pipeline/models/qa-a0-int8.onnx

With optimizations on, ONNX Runtime runs the Q/DQ pairs as its int8 kernels, first its fast u8s8 ones,
then (``session.x64quantprecision``) its u8u8 ones; with optimizations off it runs
DequantizeLinear -> FP32 op -> QuantizeLinear, i.e. the quantization simulated in FP32. A large gap
between the u8s8 line and the others means the loss comes from the CPU's int8 kernels (u8s8
saturates on x86 CPUs without VNNI), not from the quantization.
Inputs: 1,000 Fashion-MNIST test images (seed 1), pre-processed as for evaluation.
"""
from __future__ import annotations

import argparse

import numpy as np

from repvgg_deploy.backend.onnxrt.runner import session_from_onnx
from repvgg_deploy.quantize.int8 import load_calibration_images


def top1(path: str, x: np.ndarray, optimization: str, x64_quant_precision: bool = False) -> np.ndarray:
    s = session_from_onnx(path, optimization=optimization, x64_quant_precision=x64_quant_precision)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)]).argmax(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fp32")
    p.add_argument("int8")
    p.add_argument("--img-size", type=int, default=32)
    args = p.parse_args()
    x = load_calibration_images("fashion-mnist", 1000, (1, args.img_size, args.img_size), split="val", seed=1)
    x = x.astype(np.float32)
    ref = top1(args.fp32, x, "all")
    for label, level, exact in (("u8s8 int8 kernels (ORT_ENABLE_ALL)", "all", False),
                                ("u8u8 int8 kernels (ORT_ENABLE_ALL, session.x64quantprecision)", "all", True),
                                ("Q/DQ simulated in FP32 (ORT_DISABLE_ALL)", "disable", False)):
        print(f"{label}: top-1 agreement with FP32 {100 * (top1(args.int8, x, level, exact) == ref).mean():.1f} %")


if __name__ == "__main__":
    main()

"""Numeric comparison of an ONNX model (through ONNX Runtime) with a PyTorch reference."""
from __future__ import annotations

from typing import Dict, Optional, Union

import numpy as np
import torch
import torch.nn as nn

__all__ = ["compare_outputs", "compare_onnx_torch"]


def compare_outputs(ref: np.ndarray, out: np.ndarray) -> Dict[str, float]:
    """Max/mean absolute error, max error relative to the reference's scale, top-1 agreement."""
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    err = np.abs(ref - out)
    scale = float(np.abs(ref).max()) or 1.0
    return {
        "max_abs_err": float(err.max()),
        "mean_abs_err": float(err.mean()),
        "max_rel_err": float(err.max() / scale),
        "output_scale": scale,
        "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
        "n": int(ref.shape[0]),
    }


@torch.no_grad()
def compare_onnx_torch(
    onnx_model: Union[str, bytes],
    torch_model: nn.Module,
    img_size: int,
    batch: int = 4,
    seed: int = 0,
    inputs: Optional[np.ndarray] = None,
    threads: Optional[int] = None,
) -> Dict[str, float]:
    """Run both models on the same inputs (seeded N(0,1) images unless given) and compare."""
    from ..backend.onnxrt import OnnxrtRunner

    in_chans = int(getattr(torch_model, "in_chans", 3))
    if inputs is None:
        rng = np.random.default_rng(seed)
        inputs = rng.standard_normal((batch, in_chans, img_size, img_size)).astype(np.float32)
    param = next(torch_model.parameters())
    ref = torch_model.eval()(torch.from_numpy(inputs).to(param.device, param.dtype)).float().cpu().numpy()
    out = OnnxrtRunner(onnx_model, threads=threads)(inputs)
    return compare_outputs(ref, out)

"""Export with every check: fuse -> ONNX -> checker -> plain-body verification -> ONNX Runtime
comparison with the training-form model -> ONNX file + JSON report, written only if all pass."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import numpy as np
import onnx
import torch.nn as nn

from ..errors import UserError
from ..fuse.reparam import is_deploy, reparameterize_model
from ..models.repvgg import count_params
from ..utils.env import environment
from ..utils.io import atomic_path, check_writable_dir, sha256_file
from ..verify import verify_onnx
from .compare import compare_onnx_torch
from .onnx_export import DEFAULT_OPSET, get_metadata, set_metadata, to_onnx_proto

__all__ = ["ExportError", "ExportResult", "export_with_report", "DEFAULT_RTOL"]

# Max error of the fused FP32 ONNX relative to the training-form model's output scale.
# Measured float32 fusion + ONNX Runtime error is about 1e-6; 1e-4 leaves room for deep models.
# FP16 (ONNX Runtime CPU keeps FP16 weights and rounds between ops): about 1e-3 measured; 1e-2 allowed.
# INT8 has no fixed bound: its error is reported (with top-1 agreement) and judged by accuracy.
DEFAULT_RTOL = {"fp32": 1e-4, "fp16": 1e-2}


class ExportError(UserError):
    """The export ran but a check failed; nothing was written."""


@dataclass
class ExportResult:
    onnx_path: Path
    report_path: Path
    report: Dict[str, Any]


def export_with_report(
    model: nn.Module,
    out: Union[str, Path],
    img_size: int = 224,
    batch: Optional[int] = None,
    opset: int = DEFAULT_OPSET,
    metadata: Optional[Mapping[str, Any]] = None,
    checkpoint: Optional[Union[str, Path]] = None,
    compare_batch: int = 4,
    rtol: Optional[float] = None,
    seed: int = 0,
    transform: Optional[Callable[[onnx.ModelProto, nn.Module], Dict[str, Any]]] = None,
    precision: str = "fp32",
    compare_inputs: Optional[np.ndarray] = None,
    log: Callable[[str], None] = lambda s: None,
) -> ExportResult:
    """Fuse ``model``, export it to ``out`` (+ ``out.json``), verify and compare; raise on any failure.

    ``model`` is the reference (training form, or deploy form if that is all there is); it is
    not modified. ``transform`` may rewrite the fused FP32 proto in place (FP16, INT8) and
    returns report fields; ``compare_inputs`` replaces the random comparison inputs (real
    images suit INT8 better); ``rtol`` bounds the ONNX Runtime error relative to the output scale
    (default: :data:`DEFAULT_RTOL` for the precision, none for others).
    """
    out = Path(out)
    report_path = out.with_suffix(".json")
    check_writable_dir(out)
    check_writable_dir(report_path)
    if img_size % 32:
        raise UserError(f"--img-size must be a multiple of 32 (RepVGG downsamples 5 times), got {img_size}")
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be >= 1, got {batch}")
    model = model.eval()
    timings: Dict[str, float] = {}
    report: Dict[str, Any] = {"onnx": str(out), "arch": getattr(model, "arch", type(model).__name__)}

    t = time.perf_counter()
    deploy = model if is_deploy(model) else reparameterize_model(model, inplace=False)
    timings["fuse_s"] = time.perf_counter() - t
    report["params_before_fusion"] = count_params(model)
    report["params_after_fusion"] = count_params(deploy)
    log(f"fused {report['arch']}: {report['params_before_fusion']:,} -> {report['params_after_fusion']:,} parameters")

    t = time.perf_counter()
    proto = to_onnx_proto(deploy, img_size=img_size, in_chans=deploy.in_chans, batch=batch, opset=opset)
    timings["export_s"] = time.perf_counter() - t
    meta: Dict[str, Any] = {
        "arch": report["arch"],
        "num_classes": int(getattr(model, "num_classes", 0)),
        "in_chans": int(getattr(model, "in_chans", 3)),
        "img_size": img_size,
        "precision": precision,
        "fused": True,
        "input_layout": "NCHW",
    }
    meta.update(metadata or {})
    if transform is not None:
        set_metadata(proto, meta)  # the transform reads it (INT8: the mean/std of its calibration images)
        t = time.perf_counter()
        fields = transform(proto, deploy)
        report.update(fields)
        if "calibration" in fields:  # in the file too, as to_int8_onnx writes it
            meta["calibration"] = fields["calibration"]
        timings["precision_s"] = time.perf_counter() - t
    set_metadata(proto, meta)

    t = time.perf_counter()
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the exported model: {str(e).splitlines()[0]}") from None
    timings["check_s"] = time.perf_counter() - t

    t = time.perf_counter()
    verdict = verify_onnx(proto)
    verdict.path = str(out)
    timings["verify_s"] = time.perf_counter() - t
    report["verify"] = verdict.to_dict()
    if not verdict.ok:
        first = verdict.offences[0]
        raise ExportError(f"exported graph is not plain ({len(verdict.offences)} offending nodes; first: {first})")
    log(verdict.summary)

    t = time.perf_counter()
    data = proto.SerializeToString()
    if compare_inputs is not None and batch and len(compare_inputs) != batch:
        # a fixed batch takes exactly ``batch`` images: the first ones, repeated if there are fewer
        compare_inputs = np.resize(compare_inputs, (batch,) + compare_inputs.shape[1:])
    cmp = compare_onnx_torch(data, model, img_size, batch=batch or compare_batch, seed=seed, inputs=compare_inputs)
    timings["compare_s"] = time.perf_counter() - t
    report["compare"] = {"reference": "pytorch training form" if not is_deploy(model) else "pytorch deploy form",
                         "inputs": f"N(0,1), seed {seed}" if compare_inputs is None else "real images",
                         **cmp}
    limit = rtol if rtol is not None else DEFAULT_RTOL.get(precision)
    report["compare"]["rtol_limit"] = limit
    log(
        f"ONNX Runtime vs PyTorch: max abs err {cmp['max_abs_err']:.3g}, rel {cmp['max_rel_err']:.3g}, "
        f"top-1 agreement {cmp['top1_agreement'] * 100:.1f}% on {cmp['n']} inputs"
    )
    if limit is not None and not cmp["max_rel_err"] <= limit:
        raise ExportError(
            f"ONNX Runtime output differs from PyTorch: max rel err {cmp['max_rel_err']:.3g} > {limit:g}"
        )

    report.update(
        {
            "precision": precision,
            "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset),
            "img_size": img_size,
            "batch": batch if batch else "dynamic",
            "metadata": get_metadata(proto),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "environment": environment(),
        }
    )
    with atomic_path(out) as tmp_onnx, atomic_path(report_path) as tmp_json:
        tmp_onnx.write_bytes(data)
        report["onnx_sha256"] = sha256_file(tmp_onnx)
        report["onnx_bytes"] = len(data)

        tmp_json.write_text(json.dumps(report, indent=2) + "\n")
    return ExportResult(out, report_path, report)

"""Precision as a step of the export: rewrite the fused FP32 proto into FP16 or Q/DQ INT8."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import onnx

from ..errors import UserError
from .fp16 import convert_fp16
from .int8 import (DEFAULT_METHOD, DEFAULT_PERCENTILE, check_calibration, load_calibration_images, qdq_report,
                   quantize_int8)

__all__ = ["precision_transform"]

Transform = Callable[[onnx.ModelProto, Any], Dict[str, Any]]


def precision_transform(
    precision: str,
    calib: Optional[str] = None,
    calib_images: int = 512,
    calib_method: str = DEFAULT_METHOD,
    calib_percentile: float = DEFAULT_PERCENTILE,
    data_dir: Optional[str] = None,
    compare_images: int = 64,
    seed: int = 0,
    int8_target: str = "tensorrt",
    warn: Callable[[str], None] = print,
) -> Tuple[Optional[Transform], Optional[Callable[..., np.ndarray]]]:
    """The ``transform`` for :func:`~repvgg_deploy.export.export_with_report`, and a function that
    loads real comparison images (INT8 with a data spec), checking the flags first.

    Calibration and comparison images are normalized with the model's mean/std: the INT8
    transform reads them from the proto's metadata, ``comparison_images(chw, mean, std)`` takes them.
    """
    if precision == "fp32":
        return None, None
    if precision == "fp16":
        def fp16(proto: onnx.ModelProto, _model) -> Dict[str, Any]:
            proto.CopyFrom(convert_fp16(proto))
            return {}

        return fp16, None
    if precision != "int8":
        raise UserError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
    if not calib:
        raise UserError("--precision int8 needs calibration data: pass --calib (fashion-mnist, cifar10 or an image folder)")
    check_calibration(calib_method, calib_percentile, int8_target)
    if calib_images < 1:
        raise UserError(f"--calib-images must be >= 1, got {calib_images}")

    def int8(proto: onnx.ModelProto, _model) -> Dict[str, Any]:
        from ..export.onnx_export import get_metadata

        chw = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
        meta = get_metadata(proto)
        images = load_calibration_images(calib, calib_images, chw, data_dir=data_dir, seed=seed, warn=warn,
                                         mean=meta.get("mean"), std=meta.get("std"))
        proto.CopyFrom(quantize_int8(proto, images, method=calib_method, percentile=calib_percentile,
                                     target=int8_target))
        report = qdq_report(proto, int8_target)
        if report["problems"]:
            raise UserError(f"the Q/DQ model is not in TensorRT's form: {report['problems'][0]}")
        return {"int8": report, "calibration": {"source": calib, "images": int(len(images)), "method": calib_method,
                                                **({"percentile": calib_percentile} if calib_method == "percentile" else {}),
                                                "target": int8_target}}

    def comparison_images(chw, mean=None, std=None) -> np.ndarray:
        return load_calibration_images(calib, compare_images, chw, data_dir=data_dir, seed=seed + 1,
                                       warn=lambda _msg: None, split="val", mean=mean, std=std)

    return int8, comparison_images

"""Stage 5 of the pipeline: precision at the ONNX level (FP16, INT8 with explicit Q/DQ).

TensorRT 11 networks are strongly typed: the ONNX file decides the precision. Both files
made here build on TensorRT 10 as well, and run in ONNX Runtime on the CPU.
"""
from .fp16 import convert_fp16, to_fp16_onnx
from .int8 import CALIB_METHODS, DEFAULT_METHOD, DEFAULT_PERCENTILE, load_calibration_images, qdq_report, quantize_int8, to_int8_onnx

__all__ = ["convert_fp16", "to_fp16_onnx", "quantize_int8", "to_int8_onnx", "load_calibration_images",
           "qdq_report", "CALIB_METHODS", "DEFAULT_METHOD", "DEFAULT_PERCENTILE", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "int8")

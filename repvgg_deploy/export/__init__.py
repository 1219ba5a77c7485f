"""Stage 3 of the pipeline: ONNX export (fused model, metadata, checks, JSON report)."""
from .compare import compare_onnx_torch, compare_outputs
from .onnx_export import DEFAULT_OPSET, export_onnx, get_metadata, save_onnx, set_metadata, to_onnx_proto
from .pipeline import ExportError, ExportResult, export_with_report

__all__ = [
    "DEFAULT_OPSET", "export_onnx", "to_onnx_proto", "save_onnx", "set_metadata", "get_metadata",
    "compare_onnx_torch", "compare_outputs", "export_with_report", "ExportResult", "ExportError",
]

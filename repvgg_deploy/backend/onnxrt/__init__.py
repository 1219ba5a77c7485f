"""ONNX Runtime backend: session loader and runner."""
from .runner import OnnxrtRunner, available_providers, resolve_x64_quant_precision, session_from_onnx

__all__ = ["OnnxrtRunner", "session_from_onnx", "available_providers", "resolve_x64_quant_precision"]

"""repvgg-deploy: RepVGG from training to TensorRT.

The pipeline, one sub-package per stage::

    models -> fuse -> export -> verify -> quantize -> build -> bench

Public API::

    from repvgg_deploy import create_model, reparameterize, load_checkpoint, export_onnx, verify_onnx
"""
__version__ = "0.1.0"

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from .export import export_onnx, export_with_report  # noqa: E402
from .fuse import reparameterize, reparameterize_, reparameterize_model, repvgg_model_convert  # noqa: E402
from .models import create_model, list_archs, resolve_arch  # noqa: E402
from .verify import verify_onnx  # noqa: E402

__all__ = [
    "__version__", "create_model", "list_archs", "resolve_arch", "reparameterize", "reparameterize_",
    "reparameterize_model", "repvgg_model_convert", "load_checkpoint", "read_checkpoint", "save_checkpoint",
    "export_onnx", "export_with_report", "verify_onnx",
]

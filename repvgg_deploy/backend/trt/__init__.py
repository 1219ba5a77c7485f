"""TensorRT backend: engine loader (file and compatibility checks first), runner on PyTorch CUDA
tensors, and the engine inspector. Importing this package does not import TensorRT."""
from .env import SUPPORTED_MAJORS, gpu_identity, import_tensorrt, require_cuda, trt_logger, trt_major
from .loader import LoadedEngine, load_engine, precheck_engine
from .runner import TrtRunner, torch_dtype

__all__ = ["TrtRunner", "LoadedEngine", "load_engine", "precheck_engine", "import_tensorrt", "require_cuda",
           "gpu_identity", "trt_logger", "trt_major", "torch_dtype", "SUPPORTED_MAJORS"]

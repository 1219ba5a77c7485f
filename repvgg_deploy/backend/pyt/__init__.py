"""PyTorch backend: module loader and runner (CPU; CUDA with FP32/TF32/FP16/BF16, channels-last, CUDA graphs)."""
from .runner import PRECISIONS, TorchRunner, check_device, load_torch_model, set_tf32, torch_dtype

__all__ = ["TorchRunner", "PRECISIONS", "load_torch_model", "set_tf32", "torch_dtype", "check_device"]

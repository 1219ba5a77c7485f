"""Inference backends, one folder each (as in Polygraphy): a loader and a runner per backend.

- ``onnxrt``: ONNX Runtime sessions (CPU; CUDA when onnxruntime-gpu is installed)
- ``pyt``: PyTorch modules (CPU or CUDA)
- ``trt``: TensorRT engines (needs TensorRT and an NVIDIA GPU)
"""

"""Run a PyTorch module for inference: CPU or CUDA, FP32 / TF32 / FP16 / BF16, channels-last,
torch.compile and CUDA graphs.

Precision is the model's own dtype (``fp16``/``bf16`` convert weights and inputs, as a
TensorRT FP16 engine does, rather than autocast); ``fp32`` turns TF32 off for convolutions
and matmuls, ``tf32`` turns it on. Those switches are global in PyTorch, so :meth:`activate`
sets them and must be called before running (the benchmark does so before every timing window).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ...errors import MissingDependency, UserError

__all__ = ["TorchRunner", "PRECISIONS", "CUDA_ONLY_PRECISIONS", "set_tf32", "torch_dtype", "check_device", "load_torch_model"]

PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CUDA_ONLY_PRECISIONS = ("tf32", "fp16")


def torch_dtype(precision: str) -> torch.dtype:
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise UserError(f"unknown precision {precision!r} for PyTorch; choose from {', '.join(PRECISIONS)}") from None


def check_device(device: str) -> torch.device:
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MissingDependency("--device cuda: PyTorch sees no CUDA GPU on this machine "
                                    f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})")
        return torch.device(device)
    raise UserError(f"unknown device {device!r} (cpu or cuda)")


def set_tf32(enabled: bool) -> None:
    """TF32 for cuDNN convolutions and CUDA matmuls (PyTorch's legacy switches, valid in 2.4 .. 2.14)."""
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)


class TorchRunner:
    """``runner(x)`` -> output of ``model`` on ``device`` in ``precision``.

    Args:
        model: any ``nn.Module`` (put in eval mode; moved and cast here).
        device: ``cpu`` or ``cuda[:i]``.
        precision: ``fp32``, ``tf32`` (CUDA), ``fp16`` (CUDA), ``bf16``.
        channels_last: NHWC memory format for weights and inputs.
        compile: wrap in ``torch.compile`` (``compile_mode``: None, "reduce-overhead", "max-autotune" ...).
        threads: CPU threads for intra-op parallelism (set in :meth:`activate`; None leaves PyTorch's default).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str = "cpu",
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: Optional[str] = None,
        threads: Optional[int] = None,
    ) -> None:
        self.device = check_device(device)
        self.precision = precision
        self.dtype = torch_dtype(precision)
        if self.device.type != "cuda" and precision in CUDA_ONLY_PRECISIONS:
            raise UserError(f"--precision {precision} needs --device cuda (a CUDA GPU); on CPU use fp32 or bf16")
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.threads = threads
        model = model.eval().to(device=self.device, dtype=self.dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.compiled = bool(compile)
        self.fn = torch.compile(model, mode=compile_mode) if compile else model

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def activate(self) -> None:
        """Set PyTorch's global switches for this runner (TF32, cuDNN autotuning, CPU threads)."""
        if self.is_cuda:
            set_tf32(self.precision == "tf32")
            torch.backends.cudnn.benchmark = True
        if self.threads:
            torch.set_num_threads(int(self.threads))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on this runner's device, dtype and memory format."""
        x = x.to(device=self.device, dtype=self.dtype)
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    @torch.no_grad()
    def capture_graphs(self, inputs: Sequence[torch.Tensor], warmup: int = 3) -> List[Tuple["torch.cuda.CUDAGraph", torch.Tensor]]:
        """One CUDA graph per (static) input tensor, sharing a memory pool; ``graph.replay()`` reruns it.

        The model is first run ``warmup`` times on a side stream (cuDNN autotuning, lazy init),
        as PyTorch's CUDA-graph documentation asks.
        """
        if not self.is_cuda:
            raise UserError("--cuda-graphs needs --device cuda (a CUDA GPU)")
        self.activate()
        side = _side_stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup)):
                for x in inputs:
                    self.fn(x)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        pool = torch.cuda.graph_pool_handle()
        graphs = []
        for x in inputs:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                out = self.fn(x)
            graphs.append((g, out))
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the warm-up's cached blocks; the graphs keep their private pool
        return graphs


_SIDE_STREAM = None


def _side_stream():
    """One side stream for every warm-up before capture (cached blocks stay reusable across captures)."""
    global _SIDE_STREAM
    if _SIDE_STREAM is None:
        _SIDE_STREAM = torch.cuda.Stream()
    return _SIDE_STREAM


def load_torch_model(source, num_classes: int = 1000) -> nn.Module:
    """A module from a checkpoint path (this project's loader) or a benchmark model name."""
    from pathlib import Path

    if isinstance(source, nn.Module):
        return source.eval()
    if Path(str(source)).is_file():
        from ...checkpoint import load_checkpoint

        return load_checkpoint(str(source)).eval()
    from ...bench.models import build_model, resolve_model

    return build_model(resolve_model(str(source)), num_classes=num_classes)

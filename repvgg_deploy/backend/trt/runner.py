"""Run a TensorRT engine on PyTorch CUDA tensors (no pycuda, no cuda-python needed).

Device buffers are ``torch.Tensor`` s, the stream is a PyTorch stream
(``torch.cuda.current_stream().cuda_stream``; when that is the legacy default stream, on which
TensorRT would add synchronizations, the runner's own ``torch.cuda.Stream``, joined back to the
caller's stream with ``wait_stream``) and timing uses ``torch.cuda.Event``. TensorRT
sees only raw pointers: ``IExecutionContext.set_tensor_address(name, tensor.data_ptr())`` and
``execute_async_v3(stream_handle)``, the API of TensorRT 10 and 11.

For the benchmark::

    runner = TrtRunner("engines/repvgg-a0.engine")
    y = runner.infer(x)                        # x: CUDA tensor (N, C, H, W); y: CUDA tensor (N, classes)
    x, out = runner.allocate(batch=32)         # reusable buffers
    runner.enqueue(x, out)                     # no allocation, no sync: CUDA-graph capturable
    graph = runner.capture_graph(x, out)       # torch.cuda.CUDAGraph; graph.replay()
    stats = runner.benchmark(batch=32, iters=200, cuda_graph=True)
"""
from __future__ import annotations

import os
import statistics
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import UserError
from .loader import LoadedEngine, load_engine

__all__ = ["TrtRunner", "torch_dtype"]

PathLike = Union[str, os.PathLike]

_DTYPE_NAMES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
    "INT64": "int64", "BOOL": "bool", "UINT8": "uint8", "FP8": "float8_e4m3fn",
}


def torch_dtype(trt_dtype: Any):
    """The ``torch.dtype`` of a ``tensorrt.DataType`` (by name, the same in TensorRT 10 and 11)."""
    import torch

    name = getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
    if name not in _DTYPE_NAMES or not hasattr(torch, _DTYPE_NAMES[name]):
        raise UserError(f"TensorRT data type {name} has no PyTorch equivalent here")
    return getattr(torch, _DTYPE_NAMES[name])


class TrtRunner:
    """One execution context of a one-input engine, fed with CUDA tensors.

    Args:
        engine: engine path, a :class:`LoadedEngine`, or an ``ICudaEngine``.
        device: CUDA device index.
        check_compat: compare the engine JSON's TensorRT version and GPU with this machine's
            before deserializing (path only).

    Attributes: ``input_name``, ``output_names``, ``input_dtype``/``output_dtypes`` (torch
    dtypes), ``input_shape`` (engine shape, -1 for dynamic axes), ``profile`` ((min, opt, max)
    shapes of the input, ``None`` when static), ``meta`` (the engine JSON, if any).
    """

    def __init__(self, engine: Union[PathLike, LoadedEngine, Any], device: int = 0, check_compat: bool = True,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> None:
        import torch

        if isinstance(engine, (str, os.PathLike)):
            engine = load_engine(engine, device=device, check_compat=check_compat, log=log)
        self.loaded: Optional[LoadedEngine] = engine if isinstance(engine, LoadedEngine) else None
        self.engine: "trt.ICudaEngine" = engine.engine if isinstance(engine, LoadedEngine) else engine
        self.meta = self.loaded.meta if self.loaded else None
        self.device = torch.device("cuda", device)
        from .env import import_tensorrt

        trt = import_tensorrt()
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise UserError("TensorRT could not create an execution context (out of GPU memory?)")
        inputs: List[str] = []
        outputs: List[str] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            (inputs if mode == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or not outputs:
            raise UserError(f"expected an engine with one input and at least one output, got inputs {inputs}, "
                            f"outputs {outputs}")
        self.input_name = inputs[0]
        self.output_names = outputs
        self.input_dtype = torch_dtype(self.engine.get_tensor_dtype(self.input_name))
        self.output_dtypes = [torch_dtype(self.engine.get_tensor_dtype(n)) for n in outputs]
        self.input_shape = tuple(int(d) for d in self.engine.get_tensor_shape(self.input_name))
        self.profile: Optional[Tuple[Tuple[int, ...], ...]] = None
        if any(d < 0 for d in self.input_shape):
            shapes = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.profile = tuple(tuple(int(d) for d in s) for s in shapes)
        self._set_shape: Optional[Tuple[int, ...]] = None
        self.stream = torch.cuda.Stream(self.device)  # used when the caller is on the default stream

    # ------------------------------------------------------------------ shapes and buffers

    @property
    def max_batch(self) -> int:
        return self.profile[2][0] if self.profile else self.input_shape[0]

    @property
    def min_batch(self) -> int:
        return self.profile[0][0] if self.profile else self.input_shape[0]

    def _check_shape(self, shape: Tuple[int, ...]) -> None:
        if len(shape) != len(self.input_shape):
            raise UserError(f"input has shape {tuple(shape)}; the engine takes {self.input_shape}")
        if self.profile:
            lo, _opt, hi = self.profile
            bad = [i for i, (a, b, c) in enumerate(zip(lo, shape, hi)) if not a <= b <= c]
            if bad:
                raise UserError(f"input shape {tuple(shape)} is outside the engine's profile min {lo} .. max {hi}"
                                f"{' (batch)' if bad == [0] else ''}; rebuild with a wider --batch")
        elif tuple(shape) != self.input_shape:
            raise UserError(f"input shape {tuple(shape)} differs from the static engine's {self.input_shape}")

    def set_input_shape(self, shape: Sequence[int]) -> None:
        shape = tuple(int(d) for d in shape)
        if shape == self._set_shape:
            return
        self._check_shape(shape)
        if not self.context.set_input_shape(self.input_name, shape):
            raise UserError(f"TensorRT refused input shape {shape}")
        self._set_shape = shape

    def output_shape(self, name: Optional[str] = None) -> Tuple[int, ...]:
        """Shape of output ``name`` (default: the first) for the input shape last set."""
        return tuple(int(d) for d in self.context.get_tensor_shape(name or self.output_names[0]))

    def input_shape_for(self, batch: int) -> Tuple[int, ...]:
        return (int(batch),) + tuple(self.profile[1][1:] if self.profile else self.input_shape[1:])

    def allocate(self, batch: int):
        """(input, first output) CUDA tensors of the right shapes and dtypes for ``batch`` images."""
        import torch

        shape = self.input_shape_for(batch)
        self.set_input_shape(shape)
        x = torch.zeros(shape, dtype=self.input_dtype, device=self.device)
        out = torch.empty(self.output_shape(), dtype=self.output_dtypes[0], device=self.device)
        return x, out

    # ------------------------------------------------------------------ execution

    def enqueue(self, x, out, stream: Optional[int] = None, extra_outputs: Optional[Dict[str, Any]] = None):
        """Queue one inference of ``x`` into ``out``; returns ``out``.

        ``stream``: a raw ``cudaStream_t`` handle; default: PyTorch's current stream, or, when
        that is the legacy default stream, the runner's own stream ordered after it and joined
        back (``wait_stream`` both ways, no host synchronization). No allocation and no host
        synchronization: usable inside ``torch.cuda.graph`` capture (the input shape must not
        change between capture and replay). ``x`` and ``out`` must be contiguous CUDA tensors of
        the engine's dtypes.
        """
        import torch

        join = None
        if stream is None:
            current = torch.cuda.current_stream(self.device)
            if current.cuda_stream == 0:
                join = current
                self.stream.wait_stream(current)
                stream = self.stream.cuda_stream
            else:
                stream = current.cuda_stream
        self.set_input_shape(tuple(x.shape))
        buffers = [(self.input_name, x, self.input_dtype, tuple(x.shape))]
        for i, name in enumerate(self.output_names):
            buf = out if i == 0 else (extra_outputs or {}).get(name)
            if buf is None:
                raise UserError(f"engine output {name} needs a buffer (extra_outputs)")
            buffers.append((name, buf, self.output_dtypes[i], self.output_shape(name)))
        for name, buf, dtype, shape in buffers:  # TensorRT takes raw pointers: a wrong buffer is not caught there
            self._check_buffer(name, buf, dtype, shape)
            if not self.context.set_tensor_address(name, int(buf.data_ptr())):
                raise UserError(f"TensorRT refused the address of tensor {name}")
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        if join is not None:
            join.wait_stream(self.stream)
        return out

    def _check_buffer(self, name: str, buf, dtype, shape: Tuple[int, ...]) -> None:
        """``buf`` holds tensor ``name`` of ``shape``: a contiguous tensor on this GPU, of ``dtype``, large enough."""
        if buf.device != self.device:
            raise UserError(f"tensor {name} is on {buf.device}; the engine runs on {self.device}")
        if buf.dtype != dtype:
            raise UserError(f"tensor {name} is {buf.dtype}; the engine's is {dtype}")
        if not buf.is_contiguous():
            raise UserError(f"tensor {name} is not contiguous")
        need = 1
        for d in shape:
            need *= int(d)
        if buf.numel() < need:
            raise UserError(f"tensor {name} holds {buf.numel()} elements; shape {tuple(shape)} needs {need}")

    def infer(self, x):
        """Run ``x`` (a torch tensor, CUDA or CPU, any float dtype) and return the first output on the GPU.

        Work is queued on PyTorch's current stream; later PyTorch ops on that stream see the
        result, ``.cpu()`` waits for it.
        """
        import torch

        if not isinstance(x, torch.Tensor):
            raise TypeError(f"infer() takes a torch.Tensor, got {type(x).__name__}; use runner(array) for NumPy")
        x = x.to(device=self.device, dtype=self.input_dtype).contiguous()
        self.set_input_shape(tuple(x.shape))
        out = torch.empty(self.output_shape(), dtype=self.output_dtypes[0], device=self.device)
        extra = {n: torch.empty(self.output_shape(n), dtype=d, device=self.device)
                 for n, d in zip(self.output_names[1:], self.output_dtypes[1:])}
        return self.enqueue(x, out, extra_outputs=extra)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """NumPy in, NumPy out (float32 logits), in chunks of the engine's maximum batch."""
        import torch

        x = np.asarray(x)
        chunks = []
        step = max(1, self.max_batch)
        for i in range(0, len(x), step):
            part = x[i:i + step]
            if self.profile and len(part) < self.min_batch:
                raise UserError(f"batch {len(part)} is below the engine's minimum batch {self.min_batch}")
            y = self.infer(torch.from_numpy(np.ascontiguousarray(part)))
            chunks.append(y.float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)

    def capture_graph(self, x, out):
        """A ``torch.cuda.CUDAGraph`` of one inference of ``x`` into ``out`` (replay with ``.replay()``)."""
        import torch

        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # TensorRT applies deferred updates on the first enqueue: not in capture
            self.enqueue(x, out)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.enqueue(x, out)
        return graph

    def benchmark(self, batch: int, iters: int = 100, warmup: int = 20, cuda_graph: bool = False) -> Dict[str, Any]:
        """GPU time per inference of ``batch`` random images, from CUDA events around each call (ms)."""
        import torch

        x, out = self.allocate(batch)
        if x.is_floating_point():
            x.normal_()
        torch.cuda.synchronize(self.device)
        graph = self.capture_graph(x, out) if cuda_graph else None
        with torch.cuda.stream(self.stream):  # a non-default stream: events and enqueue on the same one
            run = graph.replay if graph is not None else (lambda: self.enqueue(x, out))
            for _ in range(warmup):
                run()
            torch.cuda.synchronize(self.device)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(iters)]
            for start, end in events:
                start.record()
                run()
                end.record()
            torch.cuda.synchronize(self.device)
        times = sorted(s.elapsed_time(e) for s, e in events)
        median = statistics.median(times)
        return {
            "batch": batch, "iters": iters, "warmup": warmup, "cuda_graph": cuda_graph,
            "mean_ms": statistics.fmean(times), "median_ms": median, "min_ms": times[0],
            "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
            "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
            "images_per_s": batch / (median / 1000.0) if median > 0 else float("inf"),
        }

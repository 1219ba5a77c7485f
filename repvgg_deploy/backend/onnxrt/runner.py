"""Load an ONNX file into an ONNX Runtime session and run it."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ...errors import MissingDependency, UserError

__all__ = ["session_from_onnx", "OnnxrtRunner", "available_providers", "resolve_x64_quant_precision"]


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a dependency
        raise MissingDependency("ONNX Runtime is not installed (pip install onnxruntime)") from None
    return ort


def available_providers() -> List[str]:
    return list(_ort().get_available_providers())


def session_from_onnx(
    model: Union[str, Path, bytes],
    providers: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,
    optimization: str = "all",
    x64_quant_precision: Optional[bool] = None,
):
    """An ``InferenceSession`` for a path or serialized model.

    ``threads`` fixes intra-op threads (``None``: ONNX Runtime's default, one per core);
    inter-op threads are 1 and execution is sequential, which is what a chain of convs wants.
    ``x64_quant_precision`` sets ONNX Runtime's ``session.x64quantprecision``: int8 convs and
    matmuls run as u8u8 instead of u8s8, which is slower but cannot saturate on x86 CPUs without
    VNNI. ``None`` (default) turns it on exactly where the CPU is such a CPU
    (:func:`~repvgg_deploy.utils.env.cpu_int8_saturates`); it changes nothing for FP32/FP16 models.
    """
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = int(threads)
    if resolve_x64_quant_precision(x64_quant_precision):
        so.add_session_config_entry("session.x64quantprecision", "1")
    providers = list(providers) if providers else ["CPUExecutionProvider"]
    src = str(model) if isinstance(model, (str, Path)) else model
    try:
        return ort.InferenceSession(src, sess_options=so, providers=providers)
    except Exception as e:
        where = model if isinstance(model, (str, Path)) else "<model>"
        raise UserError(f"{where}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:300]})") from None


def resolve_x64_quant_precision(value: Optional[bool]) -> bool:
    """``value``, or where it is ``None`` whether this CPU needs ONNX Runtime's non-saturating int8 kernels."""
    if value is None:
        from ...utils.env import cpu_int8_saturates

        return cpu_int8_saturates()
    return bool(value)


class OnnxrtRunner:
    """Runs a one-input model: ``runner(x)`` returns the first output as a NumPy array.

    ``x64_quant_precision``: see :func:`session_from_onnx`; the resolved value is kept as an attribute.
    """

    def __init__(self, model, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 x64_quant_precision: Optional[bool] = None) -> None:
        self.x64_quant_precision = resolve_x64_quant_precision(x64_quant_precision)
        self.session = session_from_onnx(model, providers=providers, threads=threads,
                                         x64_quant_precision=self.x64_quant_precision)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self.input_type = inp.type
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.input_type == "tensor(float16)":
            x = x.astype(np.float16)
        else:
            x = x.astype(np.float32, copy=False)
        return self.session.run([self.output_name], {self.input_name: x})[0]

"""Benchmark backends: PyTorch, ONNX Runtime and TensorRT behind one small interface.

A :class:`Target` is one loaded model on one backend (weights in memory, a session or an
engine); ``target.case(batch)`` gives a :class:`Case` for one batch size, which owns its input
buffers (and CUDA graphs) and runs one inference per :meth:`Case.step`. Cases whose
``timing`` is ``"cuda"`` enqueue work on PyTorch's current CUDA stream without waiting, so
the caller can put CUDA events around it; ``"host"`` cases return when the work is done.

The TensorRT runtime lives in :mod:`repvgg_deploy.backend.trt` and is imported lazily; the
interface assumed of it is documented on :class:`TrtTarget`.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import MissingDependency, UserError
from .models import ModelSpec, build_model

__all__ = [
    "Target", "Case", "TorchTarget", "OrtTarget", "TrtTarget", "torch_cuda_available", "ort_cuda_available",
    "tensorrt_status", "pick_auto_backend", "BACKENDS", "read_engine_json", "onnx_params", "engine_tf32", "ort_tf32",
]

BACKENDS = ("torch", "ort", "trt")


# --------------------------------------------------------------------------------------------- probes
def torch_cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def ort_cuda_available() -> bool:
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:
        return False


def tensorrt_status() -> Optional[str]:
    """None when TensorRT engines can run here, else what is missing (one line, the words of
    ``repvgg-trt build``'s error)."""
    from ..backend.trt.env import trt_unavailable

    return trt_unavailable()


def pick_auto_backend(model_names: bool = True) -> Tuple[str, str, str]:
    """(backend, device, reason) for ``--backend auto``: TensorRT if it and a GPU are here (and, for
    model names, the TensorRT module can build engines), else PyTorch CUDA, else ONNX Runtime CPU."""
    trt_missing = tensorrt_status()
    if trt_missing is None and model_names:
        try:
            importlib.import_module("repvgg_deploy.build").build_engine  # noqa: B018
        except (ImportError, AttributeError):
            trt_missing = "no repvgg_deploy.build.build_engine() to build engines from model names"
    if trt_missing is None:
        return "trt", "cuda", "TensorRT and a CUDA GPU are available"
    if torch_cuda_available():
        return "torch", "cuda", f"a CUDA GPU is available but not TensorRT ({trt_missing})"
    return "ort", "cpu", f"no CUDA GPU ({trt_missing}); ONNX Runtime on the CPU"


# --------------------------------------------------------------------------------------------- base
class Case:
    """One (model, backend, precision, batch): input buffers, and one inference per :meth:`step`."""

    timing = "host"  # "cuda": step() only enqueues on PyTorch's current stream

    def __init__(self, target: "Target", batch: int) -> None:
        self.target = target
        self.batch = batch
        self.notes: List[str] = []
        self.cuda_graphs = False

    def setup(self, buffers: int, seed: int) -> None:  # allocate inputs (and capture graphs)
        raise NotImplementedError

    def step(self, i: int) -> None:
        raise NotImplementedError

    def activate(self) -> None:
        self.target.activate()

    def teardown(self) -> None:
        pass


class Target:
    """One model loaded on one backend."""

    backend = ""
    device = "cpu"
    precision = "fp32"

    def __init__(self) -> None:
        self.notes: List[str] = []
        self.img_size: Optional[int] = None
        self.params: Optional[int] = None
        self.arch: Optional[str] = None  # a file's arch, from its metadata
        self.tf32: Optional[bool] = None  # FP32 layers allowed TF32 tensor cores (engine/session); None: unknown

    def load(self) -> None:
        raise NotImplementedError

    def case(self, batch: int) -> Case:
        raise NotImplementedError

    def activate(self) -> None:
        pass

    def flops_source(self) -> Optional[Any]:
        """Something :func:`repvgg_deploy.bench.flops.count_macs` accepts (path or proto), or None."""
        return None

    def unload(self) -> None:
        pass

    @property
    def options(self) -> str:
        return ""


def _random_inputs(n: int, shape: Sequence[int], seed: int) -> List[np.ndarray]:
    """``n`` different N(0, 1) buffers (never zeros: sparse inputs would flatter some kernels)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape), dtype=np.float32) for _ in range(max(1, n))]


# --------------------------------------------------------------------------------------------- PyTorch
class TorchTarget(Target):
    backend = "torch"

    def __init__(self, spec: ModelSpec, device: str, precision: str, img_size: int, channels_last: bool = False,
                 cuda_graphs: bool = False, compile: bool = False, compile_mode: Optional[str] = None,
                 threads: Optional[int] = None, model_fn: Optional[Callable[[], Any]] = None) -> None:
        super().__init__()
        self.spec = spec
        self.device = device
        self.precision = precision
        self.img_size = img_size
        self.channels_last = channels_last
        self.cuda_graphs = cuda_graphs
        self.compile = compile
        self.compile_mode = compile_mode
        self.threads = threads
        self.model_fn = model_fn or (lambda: build_model(spec))
        self.runner = None
        self._cpu_model = None

    @property
    def options(self) -> str:
        opts = []
        if self.channels_last:
            opts.append("channels_last")
        if self.compile:
            opts.append(f"compile{'(' + self.compile_mode + ')' if self.compile_mode else ''}")
        if self.cuda_graphs:
            opts.append("cuda_graphs")
        return "+".join(opts)

    def cpu_model(self):
        if self._cpu_model is None and self.runner is None:
            self._cpu_model = self.model_fn()
        return self._cpu_model

    def load(self) -> None:
        from ..backend.pyt import TorchRunner

        model = self.cpu_model() if self._cpu_model is not None else self.model_fn()
        self.params = sum(p.numel() for p in model.parameters())
        self._cpu_model = None
        self.runner = TorchRunner(model, device=self.device, precision=self.precision, channels_last=self.channels_last,
                                  compile=self.compile, compile_mode=self.compile_mode, threads=self.threads)

    def activate(self) -> None:
        self.runner.activate()

    def case(self, batch: int) -> Case:
        return _TorchCase(self, batch)

    def unload(self) -> None:
        self.runner = None
        self._cpu_model = None


class _TorchCase(Case):
    def __init__(self, target: TorchTarget, batch: int) -> None:
        super().__init__(target, batch)
        self.timing = "cuda" if target.runner.is_cuda else "host"
        self.inputs: list = []
        self.graphs: list = []

    def setup(self, buffers: int, seed: int) -> None:
        import torch

        t: TorchTarget = self.target  # type: ignore[assignment]
        t.activate()
        shape = (self.batch, getattr(t.runner.model, "in_chans", 3), t.img_size, t.img_size)
        self.inputs = [t.runner.prepare(torch.from_numpy(a)) for a in _random_inputs(buffers, shape, seed)]
        if t.cuda_graphs:
            self.graphs = t.runner.capture_graphs(self.inputs)
            self.cuda_graphs = True
            self._step = self._replay
        else:
            self._step = self._eager

    def _eager(self, i: int) -> None:
        self.target.runner(self.inputs[i % len(self.inputs)])

    def _replay(self, i: int) -> None:
        self.graphs[i % len(self.graphs)][0].replay()

    def step(self, i: int) -> None:
        self._step(i)

    def teardown(self) -> None:
        self.inputs, self.graphs = [], []
        _free_cuda()


def _free_cuda() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    except Exception:
        pass


# --------------------------------------------------------------------------------------------- ONNX Runtime
# FLOAT, FLOAT16, BFLOAT16 weights; INT8/UINT8 the quantized weights of a Q/DQ file
_PARAM_TYPES = (1, 10, 16, 3, 2)


def onnx_params(proto: Any) -> int:
    """Weight elements of an ONNX graph: its floating-point and INT8/UINT8 initializers (not scalars),
    less the scales and zero points of ``QuantizeLinear``/``DequantizeLinear`` (inputs 1 and 2), so that
    the FP32, FP16 and INT8 files of one model count the same."""
    qparams = {name for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for name in n.input[1:3]}
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer
               if t.data_type in _PARAM_TYPES and len(t.dims) > 0 and t.name not in qparams)


def ort_tf32(provider_options: Dict[str, Dict[str, Any]]) -> Optional[bool]:
    """Whether a session's CUDA execution provider lets FP32 convolutions and GEMMs use TF32
    (its ``use_tf32`` option, on by default), from ``session.get_provider_options()``; None when
    there is no CUDA provider or the option is not reported (ONNX Runtime before the option)."""
    value = (provider_options.get("CUDAExecutionProvider") or {}).get("use_tf32")
    if value is None:
        return None
    return str(value).strip().lower() in ("1", "true")


_INT8_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def _quantized_to(proto) -> Optional[str]:
    """What a graph's Q/DQ pairs (or ONNX Runtime's integer ops) quantize to: ``"int8"`` for 8-bit, the type's
    name (``"int16"``, ``"int4"``) for others, None for a float graph. For files, ours or another tool's,
    that carry no ``precision`` metadata."""
    import onnx

    inits = {t.name: t.data_type for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in _INT8_OPS:
            return "int8"
        if node.op_type == "QuantizeLinear":
            # the zero point's type is the quantized type (uint8 when there is none); one made by a
            # Constant node is not looked into and taken as 8-bit
            zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
            dtype = inits.get(zp, onnx.TensorProto.UINT8) if zp else onnx.TensorProto.UINT8
            if dtype in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8):
                return "int8"
            return onnx.TensorProto.DataType.Name(dtype).lower()
    return None


class OrtTarget(Target):
    """An ONNX file (given, or exported from a model name the way ``repvgg-export`` does) in ONNX Runtime."""

    backend = "ort"

    def __init__(self, device: str, threads: Optional[int], spec: Optional[ModelSpec] = None,
                 path: Optional[Path] = None, img_size: Optional[int] = None, workdir: Optional[Path] = None,
                 x64_quant_precision: Optional[bool] = None) -> None:
        super().__init__()
        if (spec is None) == (path is None):
            raise ValueError("OrtTarget needs a spec or a path")
        self.x64_quant_precision = x64_quant_precision
        self.device = device
        self.threads = threads
        self.spec = spec
        self.path = Path(path) if path else None
        self.img_size = img_size
        self.workdir = workdir
        self.runner = None
        self.proto = None
        self.input_shape: List[Any] = []

    def load(self) -> None:
        from ..backend.onnxrt import OnnxrtRunner

        if self.device == "cuda":
            if not ort_cuda_available():
                raise MissingDependency("ONNX Runtime on CUDA needs the onnxruntime-gpu package "
                                        "(the installed onnxruntime has no CUDAExecutionProvider)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        if self.spec is not None:
            from ..export import export_onnx

            model = build_model(self.spec)
            self.params = sum(p.numel() for p in model.parameters())
            folder = self.workdir or Path(tempfile.gettempdir())
            self.path = folder / f"{self.spec.key}-{self.img_size}.onnx"
            # the project's export path; RepVGG is fused by export_onnx, baselines are exported as they are
            self.proto = export_onnx(model, self.path, img_size=self.img_size, batch=None, fuse=self.spec.fused,
                                     metadata={"bench_model": self.spec.key})
            del model
        self.runner = OnnxrtRunner(str(self.path), providers=providers, threads=self.threads,
                                   x64_quant_precision=self.x64_quant_precision)
        self.input_shape = list(self.runner.input_shape)
        if self.runner.input_type == "tensor(float16)":
            self.precision = "fp16"
        elif self.runner.input_type not in ("tensor(float)",):
            self.precision = self.runner.input_type.replace("tensor(", "").rstrip(")")
        if self.spec is None:
            self._read_file_facts()
        if self.device == "cuda" and "CUDAExecutionProvider" not in self.runner.session.get_providers():
            raise MissingDependency("ONNX Runtime could not start its CUDA execution provider (CUDA/cuDNN libraries?)")
        if self.device == "cuda":
            self.tf32 = ort_tf32(self.runner.session.get_provider_options())

    def _read_file_facts(self) -> None:
        import onnx

        from ..export import get_metadata

        proto = onnx.load(str(self.path), load_external_data=False)
        meta = get_metadata(proto)
        self.arch = meta.get("arch") if isinstance(meta.get("arch"), str) else None
        if self.precision == "fp32":  # a float input: the file's own word, else what its graph quantizes to
            self.precision = str(meta.get("precision") or _quantized_to(proto) or "fp32")
        hw = self.input_shape[2:] if len(self.input_shape) == 4 else []
        if hw and all(isinstance(d, int) and d > 0 for d in hw):
            self.img_size = int(hw[0])
        elif meta.get("img_size"):
            self.img_size = int(meta["img_size"])
        self.params = onnx_params(proto)
        calibration = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else {}
        self.int8_target = calibration.get("target")  # where the file's Q/DQ sit (repvgg-export --int8-target)
        self.proto = self.path  # count_macs loads it again (stripped)

    def flops_source(self):
        return self.proto if self.proto is not None else self.path

    int8_target: Optional[str] = None

    @property
    def options(self) -> str:
        """``x64quantprecision`` where an INT8 file runs on ONNX Runtime's u8u8 kernels (see ``session_from_onnx``);
        ``fp32 convs (TensorRT Q/DQ)`` for an INT8 file with TensorRT's Q/DQ placement, whose convolutions
        ONNX Runtime runs in FP32 on dequantized weights (``--int8-target onnxruntime`` gives its int8 kernels)."""
        from ..backend.onnxrt import resolve_x64_quant_precision

        if self.precision != "int8":
            return ""
        if self.int8_target == "tensorrt":
            return "fp32 convs (TensorRT Q/DQ)"
        on = self.runner.x64_quant_precision if self.runner is not None else resolve_x64_quant_precision(self.x64_quant_precision)
        return "x64quantprecision" if on and self.device == "cpu" else ""

    def case(self, batch: int) -> Case:
        b = self.input_shape[0] if self.input_shape else None
        if isinstance(b, int) and b > 0 and b != batch:
            raise UserError(f"{self.path.name} has a static batch of {b}; batch {batch} cannot run on it")
        return _OrtCase(self, batch)

    def unload(self) -> None:
        self.runner = None
        self.proto = None


class _OrtCase(Case):
    def setup(self, buffers: int, seed: int) -> None:
        t: OrtTarget = self.target  # type: ignore[assignment]
        shape = list(t.input_shape)
        if len(shape) != 4:
            raise UserError(f"{t.path.name}: expected a 4-D NCHW input, got shape {shape}")
        c = shape[1] if isinstance(shape[1], int) else 3
        hw = t.img_size or 224
        dims = [self.batch, c, shape[2] if isinstance(shape[2], int) else hw, shape[3] if isinstance(shape[3], int) else hw]
        arrays = _random_inputs(buffers, dims, seed)
        if t.runner.input_type == "tensor(float16)":
            arrays = [a.astype(np.float16) for a in arrays]
        self.arrays = arrays
        sess = t.runner.session
        self.bindings = None
        if t.device == "cuda":
            import onnxruntime as ort

            self.bindings = []
            for a in arrays:
                b = sess.io_binding()
                b.bind_ortvalue_input(t.runner.input_name, ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0))
                b.bind_output(t.runner.output_name, "cuda")
                self.bindings.append(b)

    def step(self, i: int) -> None:
        t: OrtTarget = self.target  # type: ignore[assignment]
        if self.bindings is not None:
            t.runner.session.run_with_iobinding(self.bindings[i % len(self.bindings)])
        else:
            t.runner.session.run([t.runner.output_name], {t.runner.input_name: self.arrays[i % len(self.arrays)]})

    def teardown(self) -> None:
        self.arrays, self.bindings = [], None


# --------------------------------------------------------------------------------------------- TensorRT
def read_engine_json(engine: Path) -> Dict[str, Any]:
    """The JSON written beside an engine (``model.engine`` -> ``model.json`` or ``model.engine.json``)."""
    for p in (engine.with_suffix(".json"), engine.with_name(engine.name + ".json")):
        if p.is_file():
            try:
                data = json.loads(p.read_text())
                return data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                return {}
    return {}


def engine_tf32(meta: Dict[str, Any]) -> Optional[bool]:
    """Whether the engine was built with TF32 allowed for FP32 layers (``build.tf32`` of the engine
    JSON, see :mod:`repvgg_deploy.build.metadata`; TensorRT's default is on); None when not recorded."""
    build = meta.get("build")
    value = build.get("tf32") if isinstance(build, dict) else None
    return value if isinstance(value, bool) else None


def _profile_from_json(meta: Dict[str, Any]) -> Optional[Tuple[List[int], List[int], List[int]]]:
    """(min, opt, max) input shapes from the engine JSON, accepting a few layouts."""
    cands = []
    for key in ("profile", "profiles", "shapes", "optimization_profile", "input"):
        if key in meta:
            cands.append(meta[key])
    for c in cands:
        if isinstance(c, list) and c:
            c = c[0]
        if isinstance(c, dict):
            if all(k in c for k in ("min", "opt", "max")):
                return list(c["min"]), list(c["opt"]), list(c["max"])
            for v in c.values():  # keyed by input name
                if isinstance(v, dict) and all(k in v for k in ("min", "opt", "max")):
                    return list(v["min"]), list(v["opt"]), list(v["max"])
                if isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(s, (list, tuple)) for s in v):
                    return list(v[0]), list(v[1]), list(v[2])
    return None


class TrtTarget(Target):
    """A TensorRT engine, run by ``repvgg_deploy.backend.trt.TrtRunner`` (imported lazily).

    Interface used (as on the ``trt`` branch, commit 8eebf40; reconcile when merging):

    - ``TrtRunner(engine_path)`` deserializes the engine on the current CUDA device;
      attributes ``input_shape`` (``-1`` for dynamic axes), ``input_dtype`` (torch dtype),
      ``profile`` (``(min, opt, max)`` input shapes, ``None`` when static) and ``meta`` (the
      engine JSON: ``precision``, ``profile``, ``onnx.path``, ``onnx.metadata.arch``,
      ``build.tf32``).
    - ``runner.allocate(batch) -> (x, out)`` and ``runner.enqueue(x, out)``: ``execute_async_v3`` on
      PyTorch's current stream, no allocation, no synchronization; ``runner.capture_graph(x, out)``
      -> ``torch.cuda.CUDAGraph``. Without ``allocate``/``enqueue`` the bench falls back to
      ``runner.infer(x) -> out`` (same stream contract) and captures graphs itself.
    - the JSON beside the engine: ``x.engine.json`` (or ``x.json``) with ``"precision"`` and
      ``"profile": {"min": [..], "opt": [..], "max": [..]}``, read directly when the runner has no ``meta``.
    - model names: ``repvgg_deploy.build.build_engine(onnx, engine, BuildConfig(batch=(min, opt, max)))``
      from the FP32 export, or for ``fp16`` from ``repvgg_deploy.quantize.to_fp16_onnx`` of it (TensorRT
      is strongly typed: the ONNX sets the precision).
    """

    backend = "trt"
    device = "cuda"

    def __init__(self, path: Optional[Path] = None, spec: Optional[ModelSpec] = None, precision: str = "fp32",
                 img_size: Optional[int] = None, batches: Sequence[int] = (1,), cuda_graphs: bool = False,
                 workdir: Optional[Path] = None) -> None:
        super().__init__()
        self.path = Path(path) if path else None
        self.spec = spec
        self.precision = precision if spec is not None else "?"
        self.img_size = img_size
        self.batches = list(batches)
        self.cuda_graphs = cuda_graphs
        self.workdir = workdir
        self.runner = None
        self.meta: Dict[str, Any] = {}
        self.profile = None
        self.input_shape: Optional[List[int]] = None
        self.onnx_path: Optional[Path] = None

    @property
    def options(self) -> str:
        return "cuda_graphs" if self.cuda_graphs else ""

    def load(self) -> None:
        missing = tensorrt_status()
        if missing:
            raise MissingDependency(missing)
        mod = importlib.import_module("repvgg_deploy.backend.trt")
        if self.spec is not None:
            self._build()
        runner_cls = getattr(mod, "TrtRunner", None)
        if runner_cls is None:
            raise MissingDependency("repvgg_deploy.backend.trt has no TrtRunner")
        self.runner = runner_cls(str(self.path))
        if not (callable(getattr(self.runner, "enqueue", None)) or callable(getattr(self.runner, "infer", None))):
            raise MissingDependency("repvgg_deploy.backend.trt.TrtRunner has neither enqueue(x, out) nor infer(x)")
        meta = getattr(self.runner, "meta", None)
        if meta is not None and hasattr(meta, "to_dict"):
            meta = meta.to_dict()
        self.meta = meta if isinstance(meta, dict) else read_engine_json(self.path)
        prec = self.meta.get("precision") or getattr(self.runner, "precision", None)
        if isinstance(prec, (list, tuple)):
            prec = "+".join(str(p) for p in prec)
        if prec:
            self.precision = str(prec)
        self.tf32 = engine_tf32(self.meta)
        rp = getattr(self.runner, "profile", None) or getattr(self.runner, "profile_shapes", None)
        self.profile = tuple(list(s) for s in rp) if rp else _profile_from_json(self.meta)
        shape = getattr(self.runner, "input_shape", None)
        if not shape and self.profile:
            shape = self.profile[1]
        self.input_shape = [int(d) for d in shape] if shape else None
        if self.input_shape and len(self.input_shape) == 4 and self.input_shape[2] > 0:
            self.img_size = self.input_shape[2]
        elif self.profile and len(self.profile[1]) == 4:
            self.img_size = int(self.profile[1][2])
        onnx_info = self.meta.get("onnx") or self.meta.get("onnx_path")
        ref = onnx_info.get("path") if isinstance(onnx_info, dict) else onnx_info
        if isinstance(onnx_info, dict) and isinstance(onnx_info.get("metadata"), dict):
            arch = onnx_info["metadata"].get("arch")
            self.arch = arch if isinstance(arch, str) else None
        elif isinstance(self.meta.get("arch"), str):
            self.arch = self.meta["arch"]
        cands = [Path(ref), self.path.parent / Path(ref).name] if isinstance(ref, str) and ref else []
        for cand in cands + [self.path.with_suffix(".onnx")]:
            if cand.is_file():
                self.onnx_path = cand
                break

    def _build(self) -> None:
        try:
            build_mod = importlib.import_module("repvgg_deploy.build")
            build, config_cls = build_mod.build_engine, build_mod.BuildConfig
        except (ImportError, AttributeError) as e:
            raise MissingDependency(f"building engines from model names needs repvgg_deploy.build.build_engine ({e}); "
                                    "give .engine files instead") from None
        if self.precision not in ("fp32", "fp16"):
            raise UserError(f"--backend trt builds FP32 or FP16 engines from model names, not {self.precision}; "
                            f"give {self.precision} .engine files instead")
        from ..export import export_onnx

        folder = self.workdir or Path(tempfile.gettempdir())
        self.onnx_path = folder / f"{self.spec.key}-{self.img_size}.onnx"
        model = build_model(self.spec)
        self.params = sum(p.numel() for p in model.parameters())
        export_onnx(model, self.onnx_path, img_size=self.img_size, batch=None, fuse=self.spec.fused)
        del model
        src = self.onnx_path
        if self.precision == "fp16":  # TensorRT is strongly typed: an FP16 engine needs an FP16 ONNX
            try:
                to_fp16_onnx = importlib.import_module("repvgg_deploy.quantize").to_fp16_onnx
            except (ImportError, AttributeError) as e:
                raise MissingDependency(f"FP16 engines from model names need repvgg_deploy.quantize.to_fp16_onnx ({e})") from None
            src = to_fp16_onnx(self.onnx_path, folder / f"{self.spec.key}-{self.img_size}-fp16.onnx")
        engine = folder / f"{self.spec.key}-{self.img_size}-{self.precision}.engine"
        top = max(self.batches)
        # a training-form RepVGG is not a plain body: build it without the plain-body check
        config = config_cls(batch=(min(self.batches), top, top), verify=self.spec.fused or not self.spec.is_repvgg)
        build(str(src), str(engine), config, log=lambda s: None)
        self.path = engine

    def flops_source(self):
        return self.onnx_path

    def case(self, batch: int) -> Case:
        if self.profile is not None:
            lo, hi = int(self.profile[0][0]), int(self.profile[2][0])
            if not lo <= batch <= hi:
                raise UserError(f"batch {batch} is outside the engine's profile (batch {lo}..{hi}) of {self.path.name}")
        elif self.input_shape and self.input_shape[0] > 0 and self.input_shape[0] != batch:
            raise UserError(f"{self.path.name} has a static batch of {self.input_shape[0]}; batch {batch} cannot run on it")
        return _TrtCase(self, batch)

    def unload(self) -> None:
        self.runner = None
        _free_cuda()


class _TrtCase(Case):
    timing = "cuda"

    def setup(self, buffers: int, seed: int) -> None:
        import torch

        t: TrtTarget = self.target  # type: ignore[assignment]
        r = t.runner
        s = t.img_size or 224
        if callable(getattr(r, "input_shape_for", None)):
            shape = [int(d) for d in r.input_shape_for(self.batch)]
        else:
            shape = list(t.input_shape or [self.batch, 3, s, s])
            shape[0] = self.batch
            shape = [d if d > 0 else (t.profile[1][i] if t.profile else s) for i, d in enumerate(shape)]
        dtype = getattr(r, "input_dtype", None) or torch.float32
        self.inputs = [torch.from_numpy(a).to("cuda", dtype).contiguous() for a in _random_inputs(buffers, shape, seed)]
        self.outputs: list = []
        self.graphs: list = []
        if callable(getattr(r, "allocate", None)) and callable(getattr(r, "enqueue", None)):
            _, out = r.allocate(self.batch)
            self.outputs = [torch.empty_like(out) for _ in self.inputs]
            self._run = lambda k: r.enqueue(self.inputs[k], self.outputs[k])
        else:
            self._run = lambda k: r.infer(self.inputs[k])
        for k in range(len(self.inputs)):  # first enqueues: shapes set, deferred updates done
            self._run(k)
        torch.cuda.synchronize()
        if t.cuda_graphs:
            try:
                if self.outputs and callable(getattr(r, "capture_graph", None)):
                    self.graphs = [r.capture_graph(x, o) for x, o in zip(self.inputs, self.outputs)]
                else:
                    pool = torch.cuda.graph_pool_handle()
                    for k in range(len(self.inputs)):
                        g = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(g, pool=pool):
                            self._run(k)
                        self.graphs.append(g)
                torch.cuda.synchronize()
                self.cuda_graphs = True
            except Exception as e:  # enqueue not capturable: time plain enqueues
                self.graphs = []
                self.notes.append(f"CUDA graph capture failed, plain enqueue timed ({str(e).splitlines()[0][:120]})")
                torch.cuda.synchronize()

    def step(self, i: int) -> None:
        if self.graphs:
            self.graphs[i % len(self.graphs)].replay()
        else:
            self._run(i % len(self.inputs))

    def teardown(self) -> None:
        self.inputs, self.outputs, self.graphs = [], [], []

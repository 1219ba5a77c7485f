"""Stage 6 of the pipeline: ONNX -> TensorRT engine (+ engine JSON), for TensorRT 10 and 11.

Every network is **strongly typed** (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, present
since TensorRT 9 and the only mode of TensorRT 11): the precision is the ONNX's own. An FP16
engine comes from an FP16 ONNX, an INT8 engine from a Q/DQ ONNX (``repvgg_deploy.quantize``
writes both); the builder flags ``FP16``/``INT8`` and the INT8 calibrators, removed in
TensorRT 11, are never used, on 10 either.

    from repvgg_deploy.build import BuildConfig, build_engine
    meta = build_engine("models/repvgg-a0.onnx", "engines/repvgg-a0.engine",
                        BuildConfig(batch=(1, 32, 256), workspace=4 << 30, opt_level=3))

Steps: read the ONNX and its metadata -> verify the plain body (RepVGG files only) -> check
TensorRT and the GPU -> parse (errors listed node by node) -> profile, workspace, optimization
level, timing cache, DETAILED profiling verbosity (for ``repvgg-trt inspect``) -> build ->
write engine, engine JSON and timing cache atomically.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import onnx

from .. import __version__
from ..errors import UserError
from ..utils.env import now_iso
from ..utils.io import atomic_path, atomic_write_bytes, check_writable_dir, sha256_file
from .metadata import EngineMeta, meta_path, write_engine_meta

__all__ = ["BuildConfig", "build_engine", "precheck_onnx", "OnnxPrecheck", "parse_batch", "parse_workspace",
           "onnx_precision", "is_repvgg_onnx",
           "OnnxParseError", "DEFAULT_DYNAMIC_BATCH", "format_bytes"]

PathLike = Union[str, os.PathLike]
# Profile for an ONNX with a dynamic batch axis when no --batch is given.
DEFAULT_DYNAMIC_BATCH = (1, 32, 256)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


class OnnxParseError(UserError):
    """TensorRT's ONNX parser refused the file; ``lines`` has one line per parser error."""

    def __init__(self, path: PathLike, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        head = f"TensorRT's ONNX parser rejected {path} ({len(self.lines)} error{'s' * (len(self.lines) != 1)})"
        super().__init__("\n".join([head + ":"] + [f"  {line}" for line in self.lines]) if self.lines else head)


def parse_batch(text: Union[str, int, Sequence[int]]) -> Tuple[int, int, int]:
    """``"1:32:256"`` -> (1, 32, 256); ``"8"`` -> (8, 8, 8). Needs 1 <= MIN <= OPT <= MAX."""
    if isinstance(text, int):
        values = [text]
    elif isinstance(text, (tuple, list)):
        values = list(text)
    else:
        parts = str(text).strip().split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise UserError(f"--batch: expected N or MIN:OPT:MAX with integers, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise UserError(f"--batch: expected N or MIN:OPT:MAX (three numbers), got {text!r}")
    lo, opt, hi = values
    if lo < 1:
        raise UserError(f"--batch: MIN must be >= 1, got {lo}")
    if lo > opt:
        raise UserError(f"--batch: MIN {lo} > OPT {opt}; need MIN <= OPT <= MAX")
    if opt > hi:
        raise UserError(f"--batch: OPT {opt} > MAX {hi}; need MIN <= OPT <= MAX")
    return lo, opt, hi


def parse_workspace(text: Union[str, int, None]) -> Optional[int]:
    """``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"1073741824"`` -> bytes (binary units); ``None`` stays ``None``."""
    if text is None or isinstance(text, int):
        if isinstance(text, int) and text <= 0:
            raise UserError(f"--workspace must be > 0, got {text}")
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise UserError(f"--workspace: expected a size such as 4G, 512M or 1073741824, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UserError(f"--workspace must be > 0, got {text!r}")
    return value


def format_bytes(n: Optional[int]) -> str:
    if n is None:
        return "default"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


@dataclass
class BuildConfig:
    """What ``repvgg-trt build`` passes to :func:`build_engine` (all optional).

    Attributes:
        batch: (MIN, OPT, MAX) of the optimization profile; ``None``: the ONNX's static batch, or
            :data:`DEFAULT_DYNAMIC_BATCH` for a dynamic one.
        workspace: workspace memory pool limit in bytes (``None``: TensorRT's default, all memory).
        opt_level: builder optimization level 0-5 (TensorRT's default is 3).
        timing_cache: file read before and written (atomically) after the build.
        verify: check the plain RepVGG body before building (RepVGG files only).
        tf32: let FP32 layers use TF32 tensor cores (TensorRT's default); ``False`` for exact FP32.
        verbose: TensorRT's INFO messages too.
        device: CUDA device index.
    """

    batch: Optional[Tuple[int, int, int]] = None
    workspace: Optional[int] = None
    opt_level: Optional[int] = None
    timing_cache: Optional[PathLike] = None
    verify: bool = True
    tf32: bool = True
    verbose: bool = False
    device: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "BuildConfig":
        if self.batch is not None:
            self.batch = parse_batch(self.batch)
        self.workspace = parse_workspace(self.workspace)
        if self.opt_level is not None and not 0 <= int(self.opt_level) <= 5:
            raise UserError(f"--opt-level must be 0..5, got {self.opt_level}")
        if self.timing_cache is not None:
            tc = Path(self.timing_cache)
            if tc.is_dir():
                raise UserError(f"--timing-cache is a folder, not a file: {tc}")
            check_writable_dir(tc)
        return self


# --------------------------------------------------------------------------- ONNX facts (no TensorRT)

def onnx_precision(proto: onnx.ModelProto, metadata: Optional[Dict[str, Any]] = None) -> str:
    """``int8`` (Q/DQ nodes), ``fp16`` (FP16 weights or activations) or ``fp32``.

    The graph decides; the ``precision`` metadata key is only a fallback for graphs without
    any floating-point evidence.
    """
    ops = {n.op_type for n in proto.graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return "int8"
    f16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == f16 for t in proto.graph.initializer):
        return "fp16"
    values = list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info)
    if any(v.type.tensor_type.elem_type == f16 for v in values):
        return "fp16"
    for n in proto.graph.node:
        if n.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in n.attribute):
            return "fp16"
    meta_precision = str((metadata or {}).get("precision", "fp32")).lower()
    return meta_precision if meta_precision in ("fp32", "fp16", "int8") else "fp32"


def is_repvgg_onnx(metadata: Dict[str, Any]) -> bool:
    """True when the ONNX metadata names a RepVGG/QARepVGG arch of this project."""
    arch = str(metadata.get("arch", ""))
    if not arch:
        return False
    try:
        from ..models.config import resolve_arch

        resolve_arch(arch)
        return True
    except Exception:
        return "repvgg" in arch.lower()


def _onnx_input(proto: onnx.ModelProto) -> Tuple[str, List[Optional[int]]]:
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UserError(f"expected an ONNX with one input, got {len(inputs)}: {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def _profile_shapes(onnx_path: PathLike, dims: List[Optional[int]], batch: Optional[Tuple[int, int, int]]
                    ) -> Optional[Dict[str, List[int]]]:
    """min/opt/max of the input, or ``None`` for a static input built as it is."""
    if len(dims) < 2 or any(d is None for d in dims[1:]):
        raise UserError(f"{onnx_path}: only the batch axis may be dynamic, the input has dims {dims}")
    rest = [int(d) for d in dims[1:]]  # type: ignore[arg-type]
    if dims[0] is not None:  # static batch
        if batch is not None and batch != (dims[0],) * 3:
            raise UserError(f"{onnx_path} has a static batch of {dims[0]}; --batch {':'.join(map(str, batch))} "
                            f"needs an ONNX with a dynamic batch (repvgg-export without --batch)")
        return None
    lo, opt, hi = batch or DEFAULT_DYNAMIC_BATCH
    return {"min": [lo] + rest, "opt": [opt] + rest, "max": [hi] + rest}


# --------------------------------------------------------------------------- TensorRT

def parser_errors(parser: "trt.OnnxParser") -> List[str]:
    """One line per ONNX parser error: node index, name and operator, then TensorRT's text."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node()
        where = f"node {node}" if node >= 0 else "model"
        name, op = err.node_name(), err.node_operator()
        if name or op:
            where += f" ({name or '?'}: {op or '?'})"
        desc = " ".join(str(err.desc()).split())
        lines.append(f"{where}: {desc} [{getattr(err.code(), 'name', err.code())}]")
    return lines


def _read_timing_cache(trt: Any, config: "trt.IBuilderConfig", path: Optional[Path], log: Callable[[str], None]):
    data = b""
    if path is not None and path.exists():
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read --timing-cache {path}: {e.strerror or e}") from None
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # a corrupt file: TensorRT throws (or returns None, below), start over
        cache = None
    if cache is None:
        if data:
            log(f"note: {path} is not a TensorRT timing cache; starting a new one")
        cache = config.create_timing_cache(b"")
        data = b""
    if cache is None:
        raise UserError("TensorRT could not create a timing cache (see the TensorRT log above)")
    if not config.set_timing_cache(cache, False):
        log(f"note: {path} was made by another TensorRT version or GPU; starting a new one")
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, True):
            raise UserError("TensorRT could not use a new timing cache (see the TensorRT log above)")
        data = b""
    return len(data)


def _network_io(network: "trt.INetworkDefinition") -> List[Dict[str, Any]]:
    io = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        io.append({"name": t.name, "mode": "input", "dtype": str(getattr(t.dtype, "name", t.dtype)),
                   "shape": [int(d) for d in t.shape]})
    for i in range(network.num_outputs):
        t = network.get_output(i)
        io.append({"name": t.name, "mode": "output", "dtype": str(getattr(t.dtype, "name", t.dtype)),
                   "shape": [int(d) for d in t.shape]})
    return io


@dataclass(frozen=True)
class OnnxPrecheck:
    """What :func:`precheck_onnx` found in an ONNX file, all of it without TensorRT."""

    input_name: str
    profile_shapes: Optional[Dict[str, List[int]]]
    precision: str
    metadata: Dict[str, Any]
    pending: Tuple[str, ...] = ()  # lines to print once the build can go ahead
    notes: Tuple[str, ...] = ()    # recorded in the engine JSON


def precheck_onnx(onnx_path: PathLike, engine_path: PathLike, config: Optional[BuildConfig] = None) -> OnnxPrecheck:
    """Every check of a build that needs no TensorRT: the ONNX (readable, one input, the profile
    against ``config.batch``, a plain body for RepVGG files) and the engine path.

    Raises :class:`UserError` at the first failure; nothing is written.
    """
    from ..export.onnx_export import get_metadata
    from ..verify import load_onnx, verify_onnx

    config = (config or BuildConfig()).validate()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    notes: List[str] = []
    pending: List[str] = []
    proto = load_onnx(onnx_path)
    metadata = get_metadata(proto)
    input_name, dims = _onnx_input(proto)
    profile_shapes = _profile_shapes(onnx_path, dims, config.batch)
    precision = onnx_precision(proto, metadata)
    if engine_path.suffix in (".onnx", ".json"):
        raise UserError(f"engine output must not end in {engine_path.suffix}: {engine_path}")
    if engine_path.resolve() == onnx_path.resolve():
        raise UserError(f"engine output would overwrite the ONNX: {engine_path}")
    check_writable_dir(engine_path)
    check_writable_dir(meta_path(engine_path))
    if is_repvgg_onnx(metadata):
        if config.verify:
            verdict = verify_onnx(proto)
            if not verdict.ok:
                first = verdict.offences[0]
                raise UserError(f"{onnx_path} is a {metadata.get('arch')} ONNX but its body is not plain "
                                f"({len(verdict.offences)} offending nodes; first: {first}); re-export it fused "
                                f"with repvgg-export, or pass --no-verify")
            pending.append(verdict.summary.replace("<model>", str(onnx_path)))
        else:
            notes.append("plain-body verification skipped (--no-verify)")
    else:
        note = (f"note: {onnx_path} is not a RepVGG ONNX (metadata arch: {metadata.get('arch') or 'none'}); "
                "building it without the plain-body check")
        pending.append(note)
        notes.append(note.removeprefix("note: "))
    return OnnxPrecheck(input_name, profile_shapes, precision, metadata, tuple(pending), tuple(notes))


def build_engine(
    onnx_path: PathLike,
    engine_path: PathLike,
    config: Optional[BuildConfig] = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> EngineMeta:
    """Build ``onnx_path`` into ``engine_path`` (+ ``engine_path.json``); return the engine's metadata.

    Raises :class:`UserError` for bad input (missing/unreadable ONNX, not a plain RepVGG body,
    bad profile, parser errors: :class:`OnnxParseError`, a build that TensorRT refuses) and
    :class:`~repvgg_deploy.errors.MissingDependency` without TensorRT or a GPU. Nothing is
    written unless the build succeeds.
    """
    from ..backend.trt.env import gpu_identity, import_tensorrt, require_cuda, trt_logger, trt_major, trt_version

    config = (config or BuildConfig()).validate()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    # 1. Everything that needs no TensorRT.
    checked = precheck_onnx(onnx_path, engine_path, config)
    input_name, profile_shapes, precision, metadata = (checked.input_name, checked.profile_shapes,
                                                       checked.precision, checked.metadata)
    notes: List[str] = list(checked.notes)
    pending: List[str] = list(checked.pending)

    # 2. TensorRT and the GPU.
    trt = import_tensorrt()
    require_cuda(config.device)
    TRT_MAJOR = trt_major(trt)
    for line in pending:  # printed once the build can go ahead: without TensorRT the error is the only line
        log(line)
    import torch

    torch.cuda.set_device(config.device)
    logger = trt_logger(trt, config.verbose, log)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    t0 = time.perf_counter()
    data = onnx_path.read_bytes()
    ok = parser.parse(data, str(onnx_path.resolve()))  # the path locates external data, if any
    if not ok:
        raise OnnxParseError(onnx_path, parser_errors(parser) or logger.errors[-5:])
    del data

    bconfig = builder.create_builder_config()
    bconfig.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer names, precisions, tactics for inspect
    if config.workspace is not None:
        bconfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace))
    if config.opt_level is not None:
        bconfig.builder_optimization_level = int(config.opt_level)
    if not config.tf32:
        bconfig.clear_flag(trt.BuilderFlag.TF32)
    if profile_shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, profile_shapes["min"], profile_shapes["opt"], profile_shapes["max"])
        bconfig.add_optimization_profile(profile)
    cache_path = Path(config.timing_cache) if config.timing_cache is not None else None
    cache_in = _read_timing_cache(trt, bconfig, cache_path, log) if cache_path is not None else 0
    io = _network_io(network)
    plan = builder.build_serialized_network(network, bconfig)
    build_s = time.perf_counter() - t0
    if plan is None:
        detail = f": {logger.errors[-1]}" if logger.errors else ""
        raise UserError(f"TensorRT could not build {onnx_path}{detail}")
    engine_bytes = bytes(memoryview(plan))
    del plan

    # 3. Write engine, JSON and timing cache, each atomically; the engine and its JSON together, last.
    cache_out = 0
    if cache_path is not None:
        serialized = bytes(memoryview(bconfig.get_timing_cache().serialize()))
        atomic_write_bytes(cache_path, serialized)
        cache_out = len(serialized)
    gpu = gpu_identity(config.device)
    meta = EngineMeta(
        engine=engine_path.name,
        engine_bytes=len(engine_bytes),
        engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        engine_magic=engine_bytes[:4].hex(),
        tensorrt={"version": trt_version(trt), "major": TRT_MAJOR, "strongly_typed": True},
        gpu=gpu,
        precision=precision,
        profile=({"input": input_name, **profile_shapes} if profile_shapes is not None else None),
        io=io,
        onnx={"path": str(onnx_path), "sha256": sha256_file(onnx_path), "metadata": metadata},
        build={
            "seconds": round(build_s, 2),
            "workspace_bytes": config.workspace,
            "opt_level": config.opt_level if config.opt_level is not None else 3,
            "tf32": config.tf32,
            "timing_cache": str(cache_path) if cache_path else None,
            "timing_cache_bytes_in": cache_in,
            "timing_cache_bytes_out": cache_out,
            "profiling_verbosity": "DETAILED",
            "date": now_iso(),
            "host": platform.node(),
            "repvgg_deploy": __version__,
        },
        notes=notes,
    )
    # JSON renamed first, then the engine: a failure in between leaves the old engine beside a JSON
    # whose sha256 it does not match, which every loader refuses (never an engine without its JSON).
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as f:  # on disk before the rename, like every atomic_write_* file
            f.write(engine_bytes)
            f.flush()
            os.fsync(f.fileno())
        write_engine_meta(engine_path, meta)
    return meta


"""What is inside an engine: I/O tensors, profile shapes, and each layer's precision and tactic.

Layer details come from ``IEngineInspector`` in ``LayerInformationFormat.JSON`` (the engine
must be built with ``ProfilingVerbosity.DETAILED``, which ``repvgg-trt build`` sets). With a
dynamic batch the inspector is given an execution context at the profile's OPT shape, so that
formats are known ("N/A due to dynamic shapes" otherwise). The JSON schema differs between
TensorRT 10 (``Bindings``: names) and 11 (``I/O Tensors``: objects); both are read.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional

__all__ = ["inspect_engine", "layer_precision", "summarize", "format_report"]


def layer_precision(layer: Dict[str, Any]) -> str:
    """``int8``/``fp16``/``bf16``/``fp8``/``fp32``/``int32``/``int64``/``bool``/``mixed`` of one inspector layer.

    A convolution or matrix product computes in the type of its (first) input: an INT8 conv that
    writes FP32 (the last one before a float head) is int8, an FP16 conv that writes INT8 (a
    quantize fused after it) is fp16. Any other layer computes in the type it writes. Then the
    other side's types, then the weights'. Keys differ between versions ("Format/Datatype" in 10,
    also "DataType").
    """
    kind = str(layer.get("LayerType", "")).lower()
    on_input = any(k in kind for k in ("conv", "matrixmultiply", "gemm", "fullyconnected"))
    for key in (("Inputs", "Outputs") if on_input else ("Outputs", "Inputs")):
        found = []
        tensors = layer.get(key) or []
        if on_input and key == "Inputs":
            tensors = tensors[:1]  # the data input; a second one is a fused residual or bias
        for tensor in tensors:
            if isinstance(tensor, dict):
                text = " ".join(str(tensor.get(k, "")) for k in ("Format/Datatype", "DataType", "Format", "Datatype"))
                p = _precision_of(text)
                if p:
                    found.append(p)
        if found:
            return found[0] if len(set(found)) == 1 else "mixed"
    weights = layer.get("Weights")
    if isinstance(weights, dict):
        return _precision_of(str(weights.get("Type", ""))) or "unknown"
    return "unknown"


def _precision_of(text: str) -> Optional[str]:
    t = text.lower()
    if not t.strip() or "n/a" in t:
        return None
    for pattern, name in ((r"int8", "int8"), (r"fp8|e4m3", "fp8"), (r"bf16|bfloat", "bf16"),
                          (r"fp16|half", "fp16"), (r"int64", "int64"), (r"int32", "int32"), (r"bool", "bool"),
                          (r"fp32|float", "fp32")):
        if re.search(pattern, t):
            return name
    return None


def inspect_engine(loaded: Any) -> Dict[str, Any]:
    """Engine facts as a dict: ``io``, ``profiles``, ``layers`` (name, type, precision, tactic), ``raw``."""
    from .env import import_tensorrt, trt_major, trt_version

    trt = import_tensorrt()
    TRT_MAJOR = trt_major(trt)
    engine: "trt.ICudaEngine" = loaded.engine
    io = []
    dynamic = False
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        shape = [int(d) for d in engine.get_tensor_shape(name)]
        entry = {"name": name, "mode": "input" if mode == trt.TensorIOMode.INPUT else "output",
                 "dtype": str(getattr(engine.get_tensor_dtype(name), "name", "")), "shape": shape}
        if entry["mode"] == "input" and any(d < 0 for d in shape):
            dynamic = True
            entry["profiles"] = []
            for p in range(engine.num_optimization_profiles):
                lo, opt, hi = engine.get_tensor_profile_shape(name, p)
                entry["profiles"].append({"min": [int(d) for d in lo], "opt": [int(d) for d in opt],
                                          "max": [int(d) for d in hi]})
        io.append(entry)

    if TRT_MAJOR < 11:
        device_memory = int(engine.device_memory_size)  # 10.0 has no _v2; 11 has only _v2
    else:
        device_memory = int(engine.device_memory_size_v2)

    inspector = engine.create_engine_inspector()
    context = None
    if dynamic:  # give the inspector concrete shapes (profile 0, OPT), so that formats are resolved
        context = engine.create_execution_context()
        for entry in io:
            if entry.get("profiles"):
                context.set_input_shape(entry["name"], entry["profiles"][0]["opt"])
        inspector.execution_context = context
    raw_text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        raw = json.loads(raw_text)
    except ValueError:
        raw = {"Layers": [], "unparsed": raw_text}
    layers = []
    for i, layer in enumerate(raw.get("Layers") or []):
        if isinstance(layer, str):  # verbosity below DETAILED: names only
            layers.append({"index": i, "name": layer, "type": "", "precision": "unknown", "tactic": ""})
            continue
        tactic = layer.get("TacticName") or layer.get("Tactic") or layer.get("TacticValue") or ""
        layers.append({
            "index": i,
            "name": str(layer.get("Name", "")),
            "type": str(layer.get("LayerType", "")),
            "precision": layer_precision(layer),
            "tactic": str(tactic),
        })
    return {
        "engine": str(loaded.path),
        "tensorrt": trt_version(trt),
        "num_layers": int(engine.num_layers),
        "device_memory_bytes": device_memory,
        "io": io,
        "layers": layers,
        "detailed": bool(layers) and any(l["type"] for l in layers),
        "meta": loaded.meta.to_dict() if loaded.meta else None,
        "raw": raw,
    }


def summarize(info: Dict[str, Any]) -> Dict[str, int]:
    """Layers per precision, e.g. ``{"int8": 22, "fp32": 3}``."""
    counts: Dict[str, int] = {}
    for layer in info["layers"]:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return counts


def format_report(info: Dict[str, Any], max_name: int = 70) -> str:
    """The text ``repvgg-trt inspect`` prints."""
    meta = info.get("meta") or {}
    lines = []
    head = f"{info['engine']}: TensorRT {info['tensorrt']}, {info['num_layers']} layers"
    if meta:
        gpu = meta.get("gpu") or {}
        head += (f", precision {meta.get('precision')}, built with TensorRT {meta.get('tensorrt', {}).get('version')}"
                 f" on {gpu.get('name', '?')} ({gpu.get('sm', '?')})")
    lines.append(head)
    lines.append(f"device memory: {info['device_memory_bytes'] / 2**20:.1f} MiB")
    lines.append("I/O tensors:")
    for t in info["io"]:
        lines.append(f"  {t['mode']:<6} {t['name']:<16} {t['dtype']:<6} {tuple(t['shape'])}")
        for k, p in enumerate(t.get("profiles", [])):
            lines.append(f"         profile {k}: min {tuple(p['min'])}  opt {tuple(p['opt'])}  max {tuple(p['max'])}")
    counts = summarize(info)
    lines.append("layers by precision: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if not info["detailed"]:
        lines.append("note: no per-layer detail (engine not built with ProfilingVerbosity.DETAILED)")
    lines.append(f"  {'#':>3}  {'precision':<9} {'type':<18} {'name':<{max_name}}  tactic")
    for layer in info["layers"]:
        name = layer["name"] if len(layer["name"]) <= max_name else layer["name"][:max_name - 3] + "..."
        lines.append(f"  {layer['index']:>3}  {layer['precision']:<9} {layer['type']:<18} {name:<{max_name}}  "
                     f"{layer['tactic']}")
    return "\n".join(lines)

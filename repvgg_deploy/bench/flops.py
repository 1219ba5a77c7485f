"""Multiply-adds of an ONNX graph, from its shapes (ONNX shape inference).

Counted ops: ``Conv`` (``N * Cout * Hout * Wout * Cin/groups * kH * kW``), ``ConvTranspose``,
``Gemm`` (``M * N * K``) and ``MatMul`` (output elements times the reduced dimension). Biases,
activations, pooling, BatchNorm and element-wise ops are not counted: they are a fraction of a
percent of a conv net's work. The paper's "FLOPs" are multiply-adds counted the same way, so
``macs`` compares with its ``flops_b`` column; achieved FLOP/s counts 2 FLOPs per multiply-add.

The count is per image: a symbolic batch dimension is fixed to 1 before inference; a static
batch B is kept (a static export bakes it into its Reshape targets) and the count divided by B.
Large initializers are replaced by their shapes first, so a 500 MB model is not copied.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Union

import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

__all__ = ["count_macs", "MacCount", "reference_macs"]

_SMALL = 4096  # initializers up to this many elements keep their values (Reshape targets, axes ...)


class MacCount(dict):
    """``{"macs": per image, "by_op": {op: macs per image}, "nodes": counted nodes, "uncounted": [...],
    "batch": the static batch the graph was counted at (1 for a dynamic one)}``."""

    @property
    def macs(self) -> int:
        return int(self["macs"])


def _dims(vi) -> Optional[list]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            return None
    return out


def _stripped(proto: onnx.ModelProto, batch: int, hw: Optional[int]) -> onnx.ModelProto:
    """A copy with large initializers reduced to graph inputs of the same shape, batch fixed."""
    g = proto.graph
    inits = []
    shapes = []
    for t in g.initializer:
        n = math.prod(t.dims) if t.dims else 1
        if n <= _SMALL or t.data_type in (TensorProto.INT64, TensorProto.INT32):
            inits.append(t)
        else:
            shapes.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    init_names = {t.name for t in g.initializer}
    inputs = []
    for vi in g.input:
        if vi.name in init_names:
            continue
        vi = onnx.ValueInfoProto.FromString(vi.SerializeToString())
        dims = vi.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if not d.HasField("dim_value"):
                if i == 0:
                    d.dim_value = batch
                elif hw is not None and len(dims) == 4 and i >= 2:
                    d.dim_value = hw
        inputs.append(vi)
    graph = helper.make_graph(list(g.node), g.name or "g", inputs + shapes, list(g.output), initializer=inits)
    model = helper.make_model(graph, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    return model


def _static_batch(proto: onnx.ModelProto) -> int:
    """The fixed batch (dim 0) of the first graph input that is not an initializer; 1 when symbolic."""
    init_names = {t.name for t in proto.graph.initializer}
    for vi in proto.graph.input:
        if vi.name in init_names:
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
        return 1
    return 1


def _load(model: Union[str, Path, bytes, onnx.ModelProto]) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_model_from_string(bytes(model))
    return onnx.load(str(model), load_external_data=False)


def count_macs(model: Union[str, Path, bytes, onnx.ModelProto], img_size: Optional[int] = None) -> MacCount:
    """Multiply-adds per image of a one-input ONNX model (see the module doc for what is counted).

    ``img_size`` fills symbolic height/width of a 4-D input (static inputs need none). A static
    batch B is counted as it is and divided by B.
    """
    proto = _load(model)
    batch = _static_batch(proto)
    inferred = shape_inference.infer_shapes(_stripped(proto, 1, img_size), check_type=False, strict_mode=False)
    shapes: Dict[str, list] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        d = _dims(vi)
        if d is not None:
            shapes[vi.name] = d
    for t in inferred.graph.initializer:
        shapes[t.name] = list(t.dims)
    by_op: Dict[str, int] = {}
    uncounted = []
    counted = 0
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        try:
            macs = _node_macs(node, shapes)
        except (KeyError, IndexError, ValueError):
            uncounted.append(node.name or node.op_type)
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
        counted += 1
    by_op = {op: m // batch for op, m in by_op.items()}
    return MacCount(macs=sum(by_op.values()), by_op=by_op, nodes=counted, uncounted=uncounted, batch=batch)


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _node_macs(node, shapes: Dict[str, list]) -> int:
    if node.op_type == "Conv":
        w = shapes[node.input[1]]  # [Cout, Cin/g, k...]
        out = shapes[node.output[0]]  # [N, Cout, spatial...]
        return math.prod(out) * math.prod(w[1:])
    if node.op_type == "ConvTranspose":
        x = shapes[node.input[0]]  # [N, Cin, spatial...]
        w = shapes[node.input[1]]  # [Cin, Cout/g, k...]
        return math.prod(x) * math.prod(w[1:])
    if node.op_type == "Gemm":
        a = shapes[node.input[0]]
        b = shapes[node.input[1]]
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * n * k
    # MatMul: numpy semantics
    a = shapes[node.input[0]]
    out = shapes[node.output[0]]
    k = a[-1] if len(a) > 1 else a[0]
    return math.prod(out) * k


def reference_macs(model_key: str, img_size: int) -> Optional[int]:
    """Multiply-adds per image of a benchmark model from ``reference/flops_224.csv`` (written by
    tools/count_flops.py with :func:`count_macs`), or None if the table has no such entry."""
    if img_size != 224:
        return None
    return _reference_table().get(model_key)


_REF: Optional[Dict[str, int]] = None


def _reference_table() -> Dict[str, int]:
    global _REF
    if _REF is None:
        import csv
        from importlib import resources

        _REF = {}
        try:
            text = resources.files("repvgg_deploy.reference").joinpath("flops_224.csv").read_text()
        except (FileNotFoundError, OSError):
            return _REF
        for row in csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#")):
            _REF[row["model"]] = int(row["macs"])
    return _REF

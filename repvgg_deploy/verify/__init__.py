"""Stage 4 of the pipeline: prove that an ONNX graph has a plain RepVGG body.

The graph is imported with onnx-graphsurgeon, constants are folded, dead nodes removed and
the nodes sorted. The check then walks the one chain from the input to the output:

    [Cast] -> (Conv3x3 -> Relu) x N -> GlobalAveragePool|ReduceMean -> Flatten|Reshape -> Gemm -> [Cast]

``QuantizeLinear``/``DequantizeLinear`` pairs may sit anywhere (INT8 files) and ``Cast`` at
the input and output (FP16 files). Anything else is an offending node, listed with its
name, op and inputs. A training-form graph (BatchNormalization, Add, 1x1 Conv) fails.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import onnx

from ..errors import UserError
from ..utils.io import existing_file

__all__ = ["VerifyResult", "Offence", "verify_onnx", "load_onnx"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_POOL = ("GlobalAveragePool", "ReduceMean")
_FLAT = ("Flatten", "Reshape")


@dataclass
class Offence:
    name: str
    op: str
    inputs: List[str]
    reason: str

    def __str__(self) -> str:
        return f"{self.name or '<unnamed>'} ({self.op}) inputs={self.inputs}: {self.reason}"


@dataclass
class VerifyResult:
    path: str
    ok: bool
    convs: int = 0
    relus: int = 0
    qdq: int = 0
    casts: int = 0
    head: List[str] = field(default_factory=list)
    offences: List[Offence] = field(default_factory=list)
    op_counts: Dict[str, int] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        extras = []
        if self.qdq:
            extras.append(f"{self.qdq} Q/DQ")
        if self.casts:
            extras.append(f"{self.casts} Cast")
        extra = f" (+{', '.join(extras)})" if extras else ""
        if self.ok:
            return (
                f"PLAIN: {self.path}: body is {self.convs} x (Conv3x3 + Relu), "
                f"head {' -> '.join(self.head)}{extra}"
            )
        return f"NOT PLAIN: {self.path}: {len(self.offences)} offending node(s)"

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "convs": self.convs,
            "relus": self.relus,
            "qdq_nodes": self.qdq,
            "casts": self.casts,
            "head": self.head,
            "op_counts": self.op_counts,
            "offences": [vars(o) for o in self.offences],
        }


def load_onnx(path: Union[str, Path]) -> onnx.ModelProto:
    """Load an ONNX file, or raise a one-line :class:`UserError`."""
    path = existing_file(path, "ONNX file", "an ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError and friends
        raise UserError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    if not model.graph.node:
        raise UserError(f"{path}: not an ONNX model (no graph nodes)")
    return model


def _kernel_shape(node) -> Optional[List[int]]:
    ks = node.attrs.get("kernel_shape")
    if ks is not None:
        return list(ks)
    if len(node.inputs) > 1 and node.inputs[1].shape is not None:
        return list(node.inputs[1].shape[2:])
    return None


def verify_onnx(model: Union[str, Path, onnx.ModelProto], fold_constants: bool = True) -> VerifyResult:
    """Check that ``model`` (path or proto) is a plain Conv3x3+ReLU body with a GAP+Gemm head."""
    import onnx_graphsurgeon as gs

    path = str(model) if not isinstance(model, onnx.ModelProto) else "<model>"
    proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
    graph = gs.import_onnx(proto)
    if fold_constants:
        try:
            graph.fold_constants()
        except Exception:  # folding is an optimisation of the check, never a reason to fail it
            pass
    graph.cleanup().toposort()

    result = VerifyResult(path=path, ok=False)
    for n in graph.nodes:
        result.op_counts[n.op] = result.op_counts.get(n.op, 0) + 1
    offences = result.offences

    def offend(node, reason: str) -> None:
        for o in offences:  # one entry per node, all its reasons
            if o.name == node.name and o.op == node.op and node.name:
                o.reason += f"; {reason}"
                return
        offences.append(Offence(node.name, node.op, [t.name for t in node.inputs], reason))

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        offences.append(Offence("<graph>", "Graph", [t.name for t in graph.inputs],
                                f"expected one input and one output, got {len(graph.inputs)} and {len(graph.outputs)}"))
        return result

    def consumers(tensor) -> list:
        return list(tensor.outputs)

    def skip_qdq(tensor):
        """Follow a tensor through Q->DQ pairs; return the tensor after them and how many nodes were skipped."""
        skipped = 0
        while True:
            users = consumers(tensor)
            if len(users) == 1 and users[0].op in _QDQ:
                tensor = users[0].outputs[0]
                skipped += 1
                continue
            return tensor, skipped

    # Walk the main chain from the graph input.
    tensor = graph.inputs[0]
    visited = set()
    fanned = set()  # reported as one of several users of a tensor; what is wrong with them is checked below
    users = consumers(tensor)
    if len(users) == 1 and users[0].op == "Cast":
        visited.add(id(users[0]))
        result.casts += 1
        tensor = users[0].outputs[0]
    stage = "body"
    head_ops: List[str] = []
    while True:
        tensor, skipped = skip_qdq(tensor)
        result.qdq += skipped
        users = consumers(tensor)
        if tensor in graph.outputs or not users:
            break
        if len(users) != 1:
            for u in users:
                offend(u, f"tensor {tensor.name} feeds {len(users)} nodes; a plain body is a single chain")
                fanned.add(id(u))
            break
        node = users[0]
        visited.add(id(node))
        op = node.op
        if stage == "body" and op == "Conv":
            ks = _kernel_shape(node)
            if ks != [3, 3]:
                offend(node, f"Conv with kernel {ks}, only 3x3 is allowed in the body")
            result.convs += 1
            out, skipped = skip_qdq(node.outputs[0])
            result.qdq += skipped
            nxt = consumers(out)
            if len(nxt) != 1 or nxt[0].op != "Relu":
                offend(node, "Conv not followed by exactly one Relu")
                tensor = node.outputs[0]
                continue
            visited.add(id(nxt[0]))
            result.relus += 1
            tensor = nxt[0].outputs[0]
            continue
        if op in _POOL and stage == "body":
            if op == "ReduceMean" and not _is_spatial_mean(node):
                offend(node, "ReduceMean that is not a global spatial mean")
            stage = "pool"
        elif op in _FLAT and stage == "pool":
            stage = "flat"
        elif op == "Gemm" and stage == "flat":
            stage = "gemm"
        elif op == "Cast" and stage == "gemm":
            result.casts += 1
            stage = "cast"
        else:
            offend(node, f"{op} is not allowed {'in the body' if stage == 'body' else 'after ' + stage}")
        if stage != "body":
            head_ops.append(op)
        tensor = node.outputs[0]
    result.head = head_ops

    # Whatever the walk did not reach is extra too (side branches, stray nodes).
    for node in graph.nodes:
        if id(node) in visited or node.op in _QDQ:
            continue
        if node.op == "Conv" and _kernel_shape(node) != [3, 3]:
            offend(node, f"Conv with kernel {_kernel_shape(node)}, only 3x3 is allowed in the body")
        elif node.op not in ("Conv", "Relu") + _POOL + _FLAT + ("Gemm", "Cast"):
            offend(node, f"{node.op} is not allowed in a plain body")
        elif id(node) not in fanned:
            offend(node, "not on the single Conv+Relu chain (a side branch)")
    if result.convs == 0:
        offences.append(Offence("<graph>", "Graph", [], "no 3x3 Conv found in the body"))
    if stage not in ("gemm", "cast"):
        offences.append(Offence("<graph>", "Graph", [], "head is not global pooling -> flatten -> Gemm"))
    result.ok = not offences
    return result


def _is_spatial_mean(node) -> bool:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        values = getattr(node.inputs[1], "values", None)
        axes = list(values.tolist()) if values is not None else None
    return axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]

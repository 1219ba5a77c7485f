"""FP16 ONNX: half-precision weights and compute, FP32 at the model's input and output.

TensorRT 11 builds FP16 engines only from FP16 networks (strong typing), so the precision is
decided here, in the ONNX file. The conversion is ONNX Runtime's own float16 converter
(``onnxruntime.transformers.float16``) with ``keep_io_types=True``, which adds one ``Cast`` at
the input and one at the output.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import onnx

from ..errors import UserError

__all__ = ["convert_fp16", "to_fp16_onnx"]


def convert_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 copy of an FP32 model; input and output stay FP32 through a ``Cast`` at each end."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    elem = proto.graph.input[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise UserError(f"FP16 conversion needs an FP32 model; this one's input is {onnx.TensorProto.DataType.Name(elem)}")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        raise UserError("FP16 conversion needs an FP32 model; this one is already quantized (Q/DQ)")
    # Keep values within FP16 range; the converter clamps weights that would overflow.
    out = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    _toposort(out.graph)  # the converter appends its input/output Casts at the end of the node list
    return out


def _toposort(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` so that every node comes after the producers of its inputs (stable)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise UserError("the FP16 graph has a cycle or a dangling input")
        pending = rest
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


def to_fp16_onnx(src: Union[str, Path], dst: Union[str, Path]) -> Path:
    """Read an FP32 ONNX file, write its FP16 form to ``dst`` (atomically), return ``dst``."""
    from ..export.onnx_export import get_metadata, save_onnx, set_metadata
    from ..verify import load_onnx

    proto = load_onnx(src)
    out = convert_fp16(proto)
    meta = get_metadata(proto)
    meta["precision"] = "fp16"
    set_metadata(out, meta)
    onnx.checker.check_model(out)
    save_onnx(out, dst)
    return Path(dst)

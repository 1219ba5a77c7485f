"""Stage 3 of the pipeline: fused model -> one ONNX file with metadata."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import onnx
import torch
import torch.nn as nn

from .. import __version__
from ..fuse.reparam import is_deploy, reparameterize_model
from ..utils.io import atomic_path

__all__ = ["DEFAULT_OPSET", "export_onnx", "set_metadata", "get_metadata", "INPUT_NAME", "OUTPUT_NAME"]

# Parsed by TensorRT 10.0+ (opsets up to 20) and 11.x (up to 25), and by ONNX Runtime.
DEFAULT_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Store ``metadata`` in ``metadata_props`` (non-strings as JSON), replacing keys already there."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if key in existing:
            existing[key].value = text
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, text
    proto.producer_name = "repvgg-deploy"
    proto.producer_version = __version__


def get_metadata(proto: onnx.ModelProto) -> Dict[str, Any]:
    """``metadata_props`` as a dict, JSON values decoded."""
    out: Dict[str, Any] = {}
    for p in proto.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except ValueError:
            out[p.key] = p.value
    return out


@contextlib.contextmanager
def _quiet_exporter():
    """The torch.export-based exporter prints progress lines; keep stdout for our own output."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        logger.setLevel(level)


def to_onnx_proto(
    model: nn.Module,
    img_size: int = 224,
    in_chans: int = 3,
    batch: Optional[int] = None,
    opset: int = DEFAULT_OPSET,
    dtype: torch.dtype = torch.float32,
) -> onnx.ModelProto:
    """Trace ``model`` (as it is, no fusion) into an in-memory ONNX model.

    ``batch=None`` gives a dynamic batch axis named ``batch``; an int gives a static one.
    """
    model = model.eval()
    example = torch.randn(batch or 2, in_chans, img_size, img_size, dtype=dtype)
    dynamic_shapes = None if batch else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    with _quiet_exporter() as log, torch.no_grad():
        try:
            program = torch.onnx.export(
                model,
                (example,),
                None,
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verbose=False,
            )
        except Exception as e:
            raise RuntimeError(f"torch.onnx.export failed: {str(e).splitlines()[0]}\n{log.getvalue()}") from e
    proto = program.model_proto
    # Drop the exporter's per-value bookkeeping (pkg.torch.* metadata): it bloats the file and
    # describes PyTorch internals, not the model.
    for value in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        del value.metadata_props[:]
    for node in proto.graph.node:
        del node.metadata_props[:]
    return proto


def export_onnx(
    model: nn.Module,
    path: Union[str, Path],
    img_size: int = 224,
    batch: Optional[int] = None,
    opset: int = DEFAULT_OPSET,
    metadata: Optional[Mapping[str, Any]] = None,
    fuse: bool = True,
) -> onnx.ModelProto:
    """Fuse (unless ``fuse=False`` or already fused) and export ``model`` to one ONNX file.

    The file is checked with ``onnx.checker`` and written atomically. Metadata gets the arch,
    class count, input size and channels by default; ``metadata`` adds to it (mean/std ...).
    Returns the written model proto.
    """
    in_chans = int(getattr(model, "in_chans", 3))
    if fuse and not is_deploy(model):
        model = reparameterize_model(model, inplace=False)
    proto = to_onnx_proto(model, img_size=img_size, in_chans=in_chans, batch=batch, opset=opset)
    meta: Dict[str, Any] = {
        "arch": getattr(model, "arch", type(model).__name__),
        "num_classes": int(getattr(model, "num_classes", 0)),
        "in_chans": in_chans,
        "img_size": img_size,
        "precision": "fp32",
        "fused": bool(is_deploy(model)),
        "input_layout": "NCHW",
    }
    meta.update(metadata or {})
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    save_onnx(proto, path)
    return proto


def save_onnx(proto: onnx.ModelProto, path: Union[str, Path]) -> None:
    """Write ``proto`` as one self-contained file (no external data), atomically."""
    data = proto.SerializeToString()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)

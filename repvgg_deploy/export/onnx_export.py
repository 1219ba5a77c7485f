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

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "max_opset", "check_opset", "export_onnx", "set_metadata", "get_metadata",
           "INPUT_NAME", "OUTPUT_NAME"]

# Parsed by TensorRT 10.0+ (opsets up to 20) and 11.x (up to 25), and by ONNX Runtime.
DEFAULT_OPSET = 18
# The torch.export-based exporter writes opset 18 and up (it cannot down-convert, e.g. ReduceMean's
# axes input); below 18 the TorchScript exporter writes the requested opset itself, down to 7.
DYNAMO_MIN_OPSET = 18
MIN_OPSET = 7
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Store ``metadata`` in ``metadata_props``, replacing keys already there.

    A plain string is stored as it is (``A0``, readable by any tool); everything else, and a string
    that would read back as another JSON value (``"2024"``, ``"true"``, ``'"x"'``), as JSON, so that
    :func:`get_metadata` returns every value with its type.
    """
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        text = value if isinstance(value, str) and not _reads_as_json(value) else json.dumps(value)
        if key in existing:
            existing[key].value = text
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, text
    proto.producer_name = "repvgg-deploy"
    proto.producer_version = __version__


def _reads_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def get_metadata(proto: onnx.ModelProto) -> Dict[str, Any]:
    """``metadata_props`` as a dict, JSON values decoded."""
    out: Dict[str, Any] = {}
    for p in proto.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except ValueError:
            out[p.key] = p.value
    return out


def max_opset() -> int:
    """The newest opset the installed ``onnx`` package knows (the exporter's upper limit)."""
    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> int:
    """``opset`` if an exporter here can write it, else an :class:`ExportError` naming the range."""
    from .pipeline import ExportError  # pipeline imports this module

    if not MIN_OPSET <= opset <= max_opset():
        raise ExportError(f"opset {opset} cannot be exported: supported opsets are {MIN_OPSET} to {max_opset()} "
                          f"(default {DEFAULT_OPSET})")
    return opset


@contextlib.contextmanager
def _quiet_exporter():
    """The torch.export-based exporter prints progress lines; keep stdout for our own output.

    onnxscript's logger is silenced too: a failed version conversion logs a whole traceback.
    """
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR if logger.name == "torch.onnx" else logging.CRITICAL)
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def to_onnx_proto(
    model: nn.Module,
    img_size: int = 224,
    in_chans: int = 3,
    batch: Optional[int] = None,
    opset: int = DEFAULT_OPSET,
    dtype: torch.dtype = torch.float32,
) -> onnx.ModelProto:
    """Trace ``model`` (as it is, no fusion) into an in-memory ONNX model of opset ``opset``.

    ``batch=None`` gives a dynamic batch axis named ``batch``; an int gives a static one.
    Opsets from 18 use the torch.export-based exporter, older ones the TorchScript exporter
    (its head is GlobalAveragePool/Flatten instead of ReduceMean/Reshape). An opset outside
    :data:`MIN_OPSET`..:func:`max_opset`, or a file whose opset is not ``opset``, raises
    :class:`~repvgg_deploy.export.ExportError`.
    """
    from .pipeline import ExportError  # pipeline imports this module

    check_opset(opset)
    model = model.eval()
    example = torch.randn(batch or 2, in_chans, img_size, img_size, dtype=dtype)
    with _quiet_exporter() as log, torch.no_grad():
        try:
            if opset >= DYNAMO_MIN_OPSET:
                program = torch.onnx.export(
                    model,
                    (example,),
                    None,
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=None if batch else ({0: torch.export.Dim("batch", min=1, max=4096)},),
                    optimize=True,
                    verbose=False,
                )
                proto = program.model_proto
            else:
                buf = io.BytesIO()
                torch.onnx.export(
                    model,
                    (example,),
                    buf,
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes=None if batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    verbose=False,
                )
                proto = onnx.load_from_string(buf.getvalue())
        except Exception as e:
            raise RuntimeError(f"torch.onnx.export failed: {str(e).splitlines()[0]}\n{log.getvalue()}") from e
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ExportError(f"asked for ONNX opset {opset}, but the exporter wrote opset {written}")
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
    """Fuse (unless ``fuse=False``) and export ``model`` to one ONNX file.

    The file is checked with ``onnx.checker`` and written atomically. Metadata gets the arch,
    class count, input size and channels by default; ``metadata`` adds to it (mean/std ...).
    Returns the written model proto.
    """
    in_chans = int(getattr(model, "in_chans", 3))
    if fuse:  # always: a block is_deploy does not recognise is fused too (fusing a fused block is a no-op)
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

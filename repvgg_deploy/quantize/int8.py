"""INT8 ONNX with explicit Q/DQ, in the form TensorRT's explicit quantization expects.

TensorRT 11 dropped implicit INT8 (``BuilderFlag.INT8`` and the calibrators): an INT8 engine
comes from an ONNX whose ``QuantizeLinear``/``DequantizeLinear`` nodes carry the scales.
This module makes that file with ONNX Runtime's post-training quantizer
(``onnxruntime.quantization.quantize_static``, QDQ format), set up the way TensorRT wants it:

- symmetric INT8 everywhere (zero point 0), activations and weights;
- per-channel weight scales (axis 0 of each Conv/Gemm weight), per-tensor activation scales;
- Q/DQ on every Conv input and weight (and the Gemm head); the logits stay FP32; biases stay
  FP32 (TensorRT quantizes them itself; an INT32 bias DQ would not parse);
- ``target="tensorrt"`` (the default): nothing on Conv outputs, the chain is
  ``DQ -> Conv -> Relu -> Q -> DQ -> Conv``, TensorRT's recommended placement (quantize the
  inputs of weighted layers, not their outputs), which it fuses into INT8 Conv+ReLU layers;
  ``target="onnxruntime"``: also a Q/DQ pair on each Conv output (``Conv -> Q -> DQ -> Relu``),
  the pattern ONNX Runtime's CPU provider fuses into its int8 ``QLinearConv`` (on the tensorrt
  form it runs FP32 convolutions on dequantized weights: right numbers, no int8 speed);
- ``Relu`` kept explicit (symmetric activations leave nothing to remove), so the graph still
  passes the plain-body verifier with Q/DQ allowed.

Calibration runs ONNX Runtime on the CPU over N real images, pre-processed with the model's
own mean/std (its metadata), with the MinMax, Entropy or Percentile method (the percentile of
|activation|).
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Union

import numpy as np
import onnx

from ..errors import UserError

__all__ = ["CALIB_METHODS", "check_calibration", "quantize_int8", "to_int8_onnx", "load_calibration_images",
           "qdq_report"]

CALIB_METHODS = ("minmax", "entropy", "percentile")
# Percentile is the default: post-ReLU activations of RepVGG/QARepVGG have rare outliers, and a
# min-max range set by them leaves too few levels for the rest (docs/precision.md shows QA-A0
# falling from 90.7 % to 72 % with min-max on 2,048 calibration images, and staying at 91.0 %
# with the 99.99th percentile).
DEFAULT_METHOD = "percentile"
DEFAULT_PERCENTILE = 99.99
INT8_MIN_OPSET = 13  # DequantizeLinear's axis (per-channel weight scales) came with opset 13
TARGETS = ("tensorrt", "onnxruntime")
log = logging.getLogger(__name__)


def _input_chw(proto: onnx.ModelProto) -> Sequence[int]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value for d in dims[1:]]


def load_calibration_images(
    spec: str,
    n: int,
    chw: Sequence[int],
    data_dir: Optional[str] = None,
    seed: int = 0,
    warn=lambda msg: warnings.warn(msg, stacklevel=3),
    split: str = "train",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """``n`` images of ``split`` of ``spec`` (a data set name or folder), evaluation transforms.

    Images are a seeded random sample, pre-processed like evaluation (no augmentation) at the
    model's size and channel count, normalized with ``mean``/``std`` (the model's; default: the
    data set's). Fewer than ``n`` available: a warning, and all are used. An image that cannot be
    read is replaced by another (a warning with the count).
    """
    from ..data import SkippedSample, build_dataset

    c, h, w = (int(v) for v in chw)
    if h < 1 or w < 1:
        raise UserError("the model's input has no fixed height and width; calibration needs one (export it with a fixed --img-size)")
    if h != w:
        raise UserError(f"the model's input is {h}x{w}; calibration needs a square input")
    dataset = build_dataset(spec, split, img_size=h, in_chans=c, data_dir=data_dir, augment=False, mean=mean, std=std)
    total = len(dataset)
    if total < n:
        warn(f"only {total} calibration images in {spec!r} ({n} asked for); using all of them")
        n = total
    if n < 1:
        raise UserError(f"no calibration images in {spec!r}")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(total, size=n, replace=False))
    images, skipped = [], 0
    spare = None
    queue = [int(i) for i in idx]
    while queue:
        sample = dataset[queue.pop(0)]
        if isinstance(sample, SkippedSample):
            skipped += 1
            if spare is None:  # replacements: the images not drawn, in a seeded order
                spare = [int(i) for i in rng.permutation(np.setdiff1d(np.arange(total), idx))]
            if spare:
                queue.append(spare.pop(0))
            continue
        image = sample[0]
        if tuple(image.shape) != (c, h, w):
            raise UserError(
                f"calibration images from {spec!r} are {'x'.join(map(str, image.shape))} but the model takes {c}x{h}x{w}"
            )
        images.append(np.asarray(image, dtype=np.float32))
    if not images:
        raise UserError(f"none of the {skipped} calibration images in {spec!r} could be read")
    if skipped:
        warn(f"skipped {skipped} unreadable calibration image(s) in {spec!r}; using {len(images)}")
    return np.stack(images)


class _Reader:
    """``CalibrationDataReader`` over an array of images, in batches.

    ``static``: the model's batch is fixed at ``batch``, so the last batch is filled up with
    images from the start (repeats move min/max not at all and a histogram little).
    """

    def __init__(self, input_name: str, images: np.ndarray, batch: int = 16, static: bool = False) -> None:
        if static and len(images) % batch:
            fill = batch - len(images) % batch
            images = np.concatenate([images, np.resize(images, (fill,) + images.shape[1:])])
        self.input_name, self.images, self.batch = input_name, images, batch
        self._it: Iterator[Dict[str, np.ndarray]] = iter(())
        self.rewind()

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(
            {self.input_name: self.images[i : i + self.batch]} for i in range(0, len(self.images), self.batch)
        )


def check_calibration(method: str, percentile: float = DEFAULT_PERCENTILE, target: str = "tensorrt") -> None:
    """One-line :class:`UserError` for an unknown ``--calib-method`` or ``--int8-target``, or a
    percentile outside (0, 100]."""
    if target not in TARGETS:
        raise UserError(f"unknown INT8 target {target!r}; choose one of {', '.join(TARGETS)}")
    if method not in CALIB_METHODS:
        raise UserError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIB_METHODS)}")
    if not 0 < percentile <= 100:
        raise UserError(f"--calib-percentile must be in (0, 100], got {percentile:g}")


def quantize_int8(
    proto: onnx.ModelProto,
    images: np.ndarray,
    method: str = DEFAULT_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    op_types: Sequence[str] = ("Conv", "Gemm"),
    reduce_range: bool = False,
    target: str = "tensorrt",
) -> onnx.ModelProto:
    """Q/DQ INT8 copy of an FP32 model, calibrated on ``images`` (N, C, H, W float32, pre-processed).

    ``target``: where activations are quantized, ``"tensorrt"`` or ``"onnxruntime"`` (module doc).

    ``reduce_range``: 7-bit weights (ONNX Runtime's option; not TensorRT's form and not needed for
    ONNX Runtime either, whose u8u8 kernels avoid the saturation it is meant for: docs/precision.md).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    check_calibration(method, percentile, target)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        raise UserError("the model is already quantized (it has Q/DQ nodes)")
    if proto.graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise UserError("INT8 quantization needs the FP32 model (not an FP16 one)")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < INT8_MIN_OPSET:
        raise UserError(f"INT8 needs ONNX opset {INT8_MIN_OPSET} or newer (per-channel Q/DQ); the model has opset {opset} "
                        f"(export it with --opset {INT8_MIN_OPSET} or newer)")
    chw = list(_input_chw(proto))
    if images.ndim != 4 or list(images.shape[1:]) != chw:
        raise UserError(
            f"calibration images are {'x'.join(map(str, images.shape[1:]))} but the model takes {'x'.join(map(str, chw))}"
        )
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_value if batch_dim.dim_value else 16
    # Entropy runs ONNX Runtime's KL-divergence calibrator first, with 512 histogram bins and 128
    # quantized bins: quantize_static would build it with 128 and 128, which leaves one candidate
    # threshold, the min-max one (identical files were the result). Its ranges then enter
    # quantize_static as per-tensor overrides.
    calib = CalibrationMethod.Percentile if method == "percentile" else CalibrationMethod.MinMax
    extra: Dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "QDQKeepRemovableActivations": True,
        # FP32 logits always; TensorRT's form also leaves Conv outputs alone (Q comes after the ReLU,
        # at the next Conv's input), ONNX Runtime's quantizes them (its QLinearConv fusion needs it)
        "OpTypesToExcludeOutputQuantization": ["Conv", "Gemm"] if target == "tensorrt" else ["Gemm"],
        "CalibTensorRangeSymmetric": True,  # the percentile is one of |activation| (and min-max is symmetric)
    }
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    inferred = onnx.shape_inference.infer_shapes(proto)
    with tempfile.TemporaryDirectory(prefix="repvgg-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(inferred, str(src))
        reader = _Reader(proto.graph.input[0].name, images.astype(np.float32), batch, static=bool(batch_dim.dim_value))
        if method == "entropy":
            extra["TensorQuantOverrides"] = _entropy_ranges(src, Path(tmp), reader)
            reader.rewind()
        root = logging.getLogger()
        level = root.level
        # ONNX Runtime's quantizer prints progress and logs advice on the root logger: keep stdout clean.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            root.setLevel(logging.ERROR)
            try:
                quantize_static(
                    str(src),
                    str(dst),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types),
                    per_channel=True,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=calib,
                    extra_options=extra,
                )
            finally:
                root.setLevel(level)
        out = onnx.load(str(dst))
    del out.graph.value_info[:]  # intermediate shapes from inference: not needed in the file
    return out


def _entropy_ranges(model_path: Path, tmp: Path, reader: "_Reader", num_bins: int = 512,
                    num_quantized_bins: int = 128) -> Dict[str, list]:
    """Per-tensor ranges from ONNX Runtime's entropy (KL-divergence) calibrator, as quantizer overrides."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(
            str(model_path), None, augmented_model_path=str(tmp / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            extra_options={"num_bins": num_bins, "num_quantized_bins": num_quantized_bins, "symmetric": True},
        )
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    out: Dict[str, list] = {}
    for name, data in ranges.data.items():
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in data.range_value)
        out[name] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
    return out


def qdq_report(proto: onnx.ModelProto, target: Optional[str] = None) -> Dict[str, Any]:
    """Check the Q/DQ form TensorRT expects; return counts and a list of problems (empty = good).

    ``target`` (default: the file's own, from its metadata, else ``"tensorrt"``): with
    ``"tensorrt"``, a quantized Conv output is a problem too.
    """
    if target is None:
        from ..export.onnx_export import get_metadata

        target = (get_metadata(proto).get("calibration") or {}).get("target", "tensorrt")
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    problems = []

    def scale_zp(node) -> tuple:
        scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        zp = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else None
        return scale, zp

    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    per_channel = 0
    for conv in convs:
        for slot, what in ((0, "input"), (1, "weight")):
            dq = producers.get(conv.input[slot])
            if dq is None or dq.op_type != "DequantizeLinear":
                problems.append(f"{conv.name}: {what} has no DequantizeLinear")
                continue
            scale, zp = scale_zp(dq)
            if zp is not None and np.any(zp != 0):
                problems.append(f"{conv.name}: {what} zero point is not 0")
            if zp is not None and zp.dtype != np.int8:
                problems.append(f"{conv.name}: {what} is {zp.dtype}, not int8")
            if slot == 1:
                if dq.input[0] not in inits or inits[dq.input[0]].data_type != onnx.TensorProto.INT8:
                    problems.append(f"{conv.name}: weight is not stored as int8")
                if scale is None:
                    problems.append(f"{conv.name}: weight scale is not a constant")
                elif scale.ndim == 1 and scale.size > 1:
                    per_channel += 1
                else:
                    problems.append(f"{conv.name}: weight scale is per-tensor, not per-channel")
            elif scale is None or scale.size != 1:
                problems.append(f"{conv.name}: input scale is not per-tensor")
        if len(conv.input) > 2 and conv.input[2] in producers:
            problems.append(f"{conv.name}: bias is quantized (TensorRT wants it FP32)")
    consumers: Dict[str, list] = {}
    for n in proto.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    for node in (convs if target == "tensorrt" else []) + [n for n in proto.graph.node if n.op_type == "Gemm"]:
        if any(c.op_type == "QuantizeLinear" for c in consumers.get(node.output[0], [])):
            problems.append(f"{node.name}: its output is quantized (TensorRT's form quantizes after the ReLU, "
                            "at the next input; the logits stay FP32)")
    ops = [n.op_type for n in proto.graph.node]
    return {
        "convs": len(convs),
        "convs_per_channel_weights": per_channel,
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "problems": problems,
    }


def to_int8_onnx(
    src: Union[str, Path],
    dst: Union[str, Path],
    calib: Union[str, np.ndarray, None],
    calib_images: int = 512,
    method: str = DEFAULT_METHOD,
    data_dir: Optional[str] = None,
    seed: int = 0,
    percentile: float = DEFAULT_PERCENTILE,
    target: str = "tensorrt",
) -> Path:
    """Read an FP32 ONNX, calibrate on ``calib`` (a data spec or an image array), write the Q/DQ ONNX
    (``target``: TensorRT's placement or ONNX Runtime's, see the module doc)."""
    from ..export.onnx_export import get_metadata, save_onnx, set_metadata
    from ..utils.io import check_writable_dir
    from ..verify import load_onnx

    if calib is None or (isinstance(calib, str) and not calib):
        raise UserError("INT8 needs calibration data: pass --calib (a data set name such as fashion-mnist, or an image folder)")
    check_calibration(method, percentile, target)
    check_writable_dir(dst)
    proto = load_onnx(src)
    meta = get_metadata(proto)
    if isinstance(calib, str):
        images = load_calibration_images(calib, calib_images, _input_chw(proto), data_dir=data_dir, seed=seed,
                                         mean=meta.get("mean"), std=meta.get("std"))
        source = calib
    else:
        images, source = np.asarray(calib, dtype=np.float32), "array"
    out = quantize_int8(proto, images, method=method, percentile=percentile, target=target)
    calibration = {"method": method, "images": int(len(images)), "source": source, "target": target}
    if method == "percentile":
        calibration["percentile"] = percentile
    meta.update({"precision": "int8", "calibration": calibration})
    set_metadata(out, meta)
    onnx.checker.check_model(out)
    save_onnx(out, dst)
    return Path(dst)

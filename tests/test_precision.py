"""FP16 and INT8 (Q/DQ) ONNX: TensorRT's form, the plain-body verifier, error bounds against FP32."""
import json

import numpy as np
import onnx
import pytest
import torch

from repvgg_deploy import create_model, export_onnx, save_checkpoint, verify_onnx
from repvgg_deploy.backend.onnxrt import OnnxrtRunner
from repvgg_deploy.errors import UserError
from repvgg_deploy.export import get_metadata
from repvgg_deploy.quantize import qdq_report, quantize_int8, to_fp16_onnx, to_int8_onnx

from conftest import randomize_bn, run_cli

# Documented bounds (docs/precision.md): max error relative to the FP32 output scale.
FP16_RTOL = 1e-2
INT8_RTOL = 0.5  # a random-weight model, 64 N(0,1) calibration images (entropy clips most: 0.31 measured); trained models: docs/results/precision.md


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_bn(create_model("QA-A0", num_classes=10, in_chans=1).eval(), 1)
    path = tmp_path_factory.mktemp("prec") / "qa-a0.onnx"
    export_onnx(model, path, img_size=32)
    return path


def _images(n, seed=0, c=1, s=32):
    return np.random.default_rng(seed).standard_normal((n, c, s, s)).astype(np.float32)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_fp16_file(tmp_path, fp32_onnx):
    out = to_fp16_onnx(fp32_onnx, tmp_path / "fp16.onnx")
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    io_types = [v.type.tensor_type.elem_type for v in (proto.graph.input[0], proto.graph.output[0])]
    assert io_types == [onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT]
    weights = [t for t in proto.graph.initializer if t.name.endswith("weight") or len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    casts = [n for n in proto.graph.node if n.op_type == "Cast"]
    assert len(casts) == 2 and proto.graph.node[0].op_type == "Cast" and proto.graph.node[-1].op_type == "Cast"
    result = verify_onnx(out)
    assert result.ok and result.casts == 2
    assert get_metadata(proto)["precision"] == "fp16"
    x = _images(8)
    assert _rel(OnnxrtRunner(fp32_onnx)(x), OnnxrtRunner(out)(x)) <= FP16_RTOL


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_qdq_form_and_bound(tmp_path, fp32_onnx, method):
    calib = _images(64, seed=1)
    out = to_int8_onnx(fp32_onnx, tmp_path / f"int8-{method}.onnx", calib=calib, method=method)
    proto = onnx.load(str(out))
    report = qdq_report(proto)
    assert report["problems"] == []
    assert report["convs"] == 22 and report["convs_per_channel_weights"] == 22
    # Q/DQ on each Conv's and the Gemm's input and weight only: Conv -> Relu -> Q -> DQ -> Conv, FP32 logits
    assert report["quantize_linear"] == 23 and report["dequantize_linear"] == 46
    producers = {o: n for n in proto.graph.node for o in n.output}
    assert producers[proto.graph.output[0].name].op_type == "Gemm"
    assert verify_onnx(out).ok
    meta = get_metadata(proto)
    expected = {"method": method, "images": 64, "source": "array", "target": "tensorrt"}
    if method == "percentile":
        expected["percentile"] = 99.99
    assert meta["precision"] == "int8" and meta["calibration"] == expected
    x = _images(16, seed=2)
    ref, got = OnnxrtRunner(fp32_onnx)(x), OnnxrtRunner(out)(x)
    assert _rel(ref, got) <= INT8_RTOL


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory, fp32_onnx):
    """ONNX Runtime's Q/DQ placement: the file its CPU runs on int8 kernels."""
    return to_int8_onnx(fp32_onnx, tmp_path_factory.mktemp("int8") / "qa-a0-int8.onnx", calib=_images(64, seed=1),
                        target="onnxruntime")


def _optimized_ops(path, tmp_path):
    import collections

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def test_int8_targets_place_qdq_for_tensorrt_or_for_onnxruntime_kernels(tmp_path, fp32_onnx, int8_onnx):
    """TensorRT's form quantizes Conv inputs only; ONNX Runtime's also each Conv output, which is what
    its CPU provider fuses into int8 QLinearConv (on TensorRT's form it runs FP32 convs)."""
    trt = to_int8_onnx(fp32_onnx, tmp_path / "trt.onnx", calib=_images(64, seed=1))
    ort_form = onnx.load(str(int8_onnx))
    report = qdq_report(ort_form)  # the file's own target, from its metadata
    assert report["problems"] == [] and report["quantize_linear"] == 45 and report["dequantize_linear"] == 68
    assert "its output is quantized" in qdq_report(ort_form, "tensorrt")["problems"][0]
    producers = {o: n for n in ort_form.graph.node for o in n.output}
    assert producers[ort_form.graph.output[0].name].op_type == "Gemm"  # FP32 logits in both forms
    assert _optimized_ops(int8_onnx, tmp_path)["QLinearConv"] == 22
    ops = _optimized_ops(trt, tmp_path)
    assert ops["QLinearConv"] == 0 and ops["FusedConv"] == 22
    with pytest.raises(UserError, match="unknown INT8 target 'tflite'"):
        to_int8_onnx(fp32_onnx, tmp_path / "x.onnx", calib=_images(8), target="tflite")


def _session_out(path, x, **kw):
    from repvgg_deploy.backend.onnxrt import session_from_onnx

    s = session_from_onnx(path, **kw)
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_x64_quant_precision_kernels_follow_the_simulated_qdq(int8_onnx):
    # ORT_DISABLE_ALL runs DequantizeLinear -> FP32 Conv -> QuantizeLinear: the quantization itself, no int8 kernel.
    # With session.x64quantprecision the int8 kernels must stay near it on any CPU (0.11 measured on an AVX2 EPYC:
    # integer requantization rounds differently over 22 layers); without it, on a CPU without VNNI, 0.30 there.
    x = _images(64, seed=2)
    simulated = _session_out(int8_onnx, x, optimization="disable")
    assert _rel(simulated, _session_out(int8_onnx, x, x64_quant_precision=True)) <= 0.15


@pytest.mark.skipif(not __import__("repvgg_deploy.utils.env", fromlist=["x"]).cpu_int8_saturates(),
                    reason="this CPU has VNNI (or is not x86): ONNX Runtime's u8s8 int8 kernels do not saturate here")
def test_u8s8_kernels_saturate_without_vnni_and_auto_avoids_them(int8_onnx):
    x = _images(64, seed=2)
    simulated = _session_out(int8_onnx, x, optimization="disable")
    exact_out = _session_out(int8_onnx, x, x64_quant_precision=True)
    exact = float(np.abs(simulated - exact_out).mean())
    fast = float(np.abs(simulated - _session_out(int8_onnx, x, x64_quant_precision=False)).mean())
    assert fast > 1.5 * exact  # mean abs error 0.28 against 0.14 on an AVX2 EPYC
    assert np.array_equal(_session_out(int8_onnx, x), exact_out)  # the default (auto) picks the exact kernels here
    assert OnnxrtRunner(int8_onnx).x64_quant_precision is True


def test_reduce_range_gives_seven_bit_weights(fp32_onnx):
    from onnx import numpy_helper

    def weight_range(proto):
        ints = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        return min(int(a.min()) for a in ints), max(int(a.max()) for a in ints)

    proto = onnx.load(str(fp32_onnx))
    assert weight_range(quantize_int8(proto, _images(16))) == (-127, 127)  # per-channel symmetric: each channel's max hits 127
    lo, hi = weight_range(quantize_int8(proto, _images(16), reduce_range=True))
    assert -64 <= lo and hi <= 64


def test_cpu_int8_saturates_reads_the_cpu_flags():
    from repvgg_deploy.utils.env import cpu_int8_saturates

    assert cpu_int8_saturates({"sse4_1", "avx2", "fma"}, machine="x86_64")  # AVX2 only (Zen 3, Haswell..Coffee Lake)
    assert cpu_int8_saturates({"avx2", "avx512f", "avx512bw"}, machine="x86_64")  # AVX-512 without VNNI (Skylake-SP)
    assert not cpu_int8_saturates({"avx2", "avx512f", "avx512_vnni"}, machine="x86_64")
    assert not cpu_int8_saturates({"avx2", "avx_vnni"}, machine="x86_64")  # Alder Lake's VEX-encoded VNNI
    assert not cpu_int8_saturates({"asimd", "asimddp"}, machine="aarch64")
    assert not cpu_int8_saturates(set(), machine="x86_64")  # flags unknown: leave ONNX Runtime's default


def test_qdq_report_catches_a_plain_model(fp32_onnx):
    problems = qdq_report(onnx.load(str(fp32_onnx)))["problems"]
    assert len(problems) == 44 and "has no DequantizeLinear" in problems[0]


def test_percentile_and_entropy_clip_where_minmax_does_not(fp32_onnx):
    """Each method is really used: on the same images, no activation scale above min-max's, and many below
    (measured 2026-12-01 on this random-weight QA-A0: percentile 45 of 46 tensors, entropy 16 of 46)."""
    from onnx import numpy_helper

    calib = _images(64, seed=1)

    def activation_scales(method):
        proto = quantize_int8(onnx.load(str(fp32_onnx)), calib, method=method)
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in proto.graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in inits}

    minmax = activation_scales("minmax")
    assert len(minmax) > 20
    for method, at_least in (("percentile", 0.5), ("entropy", 0.2)):
        scales = activation_scales(method)
        assert scales.keys() == minmax.keys()
        ratio = np.array([scales[k] / minmax[k] for k in minmax])
        assert ratio.max() <= 1 + 1e-6, method
        assert (ratio < 0.999).mean() >= at_least, (method, ratio)


def test_calibration_images_are_a_seeded_sample_of_evaluation_images():
    from repvgg_deploy.data import build_dataset
    from repvgg_deploy.quantize import load_calibration_images

    a = load_calibration_images("fake", 8, (3, 32, 32), seed=0)
    assert a.shape == (8, 3, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, load_calibration_images("fake", 8, (3, 32, 32), seed=0))
    assert not np.array_equal(a, load_calibration_images("fake", 8, (3, 32, 32), seed=1))
    train = build_dataset("fake", "train", img_size=32, in_chans=3, augment=False)  # evaluation transforms
    idx = np.sort(np.random.default_rng(0).choice(len(train), size=8, replace=False))
    assert all(np.array_equal(a[k], train[int(i)][0].numpy()) for k, i in enumerate(idx))
    warned = []
    everything = load_calibration_images("fake", 10_000, (1, 16, 16), warn=warned.append)
    assert everything.shape == (len(train), 1, 16, 16) and len(warned) == 1
    assert f"only {len(train)} calibration images" in warned[0]
    with pytest.raises(UserError, match="square"):
        load_calibration_images("fake", 8, (3, 32, 16))
    with pytest.raises(UserError, match="no fixed height and width"):  # an ONNX with dynamic H and W
        load_calibration_images("fake", 8, (3, 0, 0))


def _input_scale(path) -> float:
    proto = onnx.load(str(path))
    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == proto.graph.input[0].name)
    return float(onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == q.input[1])))


def test_calibration_uses_the_models_mean_and_std(tmp_path):
    """Calibration images are normalized like evaluation: with the mean/std in the model's metadata."""
    from repvgg_deploy.data import build_dataset
    from repvgg_deploy.quantize import load_calibration_images

    a = load_calibration_images("fake", 4, (1, 32, 32), seed=0, mean=[0.5], std=[0.5])
    train = build_dataset("fake", "train", img_size=32, in_chans=1, augment=False, mean=[0.5], std=[0.5])
    idx = np.sort(np.random.default_rng(0).choice(len(train), size=4, replace=False))
    assert all(np.array_equal(a[k], train[int(i)][0].numpy()) for k, i in enumerate(idx))
    assert a.min() >= -1 and a.max() <= 1  # FakeData pixels in [0, 1], (x - 0.5) / 0.5
    torch.manual_seed(0)
    model = randomize_bn(create_model("A0", num_classes=10, in_chans=1).eval(), 1)
    scales = {}
    for name, meta in (("quarter", {"mean": [0.0], "std": [0.25]}), ("default", None)):
        src = tmp_path / f"{name}.onnx"
        export_onnx(model, src, img_size=32, metadata=meta)
        scales[name] = _input_scale(to_int8_onnx(src, tmp_path / f"{name}-int8.onnx", calib="fake", calib_images=16,
                                                 method="minmax"))
    # the input's range is its images' max |x|: up to 4 with the file's mean 0 / std 0.25, up to 1 with
    # FakeData's own 0.5 / 0.5 (what calibration used before it read the file's)
    assert 3.6 / 127 < scales["quarter"] <= 4 / 127 and 0.9 / 127 < scales["default"] <= 1 / 127


def test_calibration_of_a_fixed_batch_model_and_of_a_folder_with_a_bad_image(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    model = randomize_bn(create_model("A0", num_classes=2, in_chans=3).eval(), 1)
    src = tmp_path / "a0-b4.onnx"
    export_onnx(model, src, img_size=32, batch=4)
    for cls in ("a", "b"):
        (tmp_path / "data" / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(tmp_path / "data" / "train" / cls / f"{i}.png")
    (tmp_path / "data" / "train" / "a" / "0.png").write_bytes(b"not a png")
    warned = []
    from repvgg_deploy.quantize import load_calibration_images

    with pytest.warns(RuntimeWarning):  # the data set's own warning about the unreadable file
        images = load_calibration_images(str(tmp_path / "data"), 6, (3, 32, 32), warn=warned.append)
    assert images.shape == (5, 3, 32, 32) and any("skipped 1 unreadable" in w for w in warned), warned
    # 5 images for a model of batch 4: the last batch is filled up, not refused by ONNX Runtime
    out = to_int8_onnx(src, tmp_path / "a0-b4-int8.onnx", calib=images)
    assert qdq_report(onnx.load(str(out)))["problems"] == []
    assert OnnxrtRunner(out)(images[:4]).shape == (4, 2)


def test_int8_bad_inputs(tmp_path, fp32_onnx):
    out = tmp_path / "x.onnx"
    with pytest.raises(UserError, match="--calib"):
        to_int8_onnx(fp32_onnx, out, calib=None)
    with pytest.raises(UserError, match="calibration images are 3x32x32 but the model takes 1x32x32"):
        to_int8_onnx(fp32_onnx, out, calib=_images(8, c=3))
    old = tmp_path / "opset11.onnx"
    export_onnx(create_model("A0", num_classes=10, in_chans=1).eval(), old, img_size=32, opset=11)
    with pytest.raises(UserError, match="INT8 needs ONNX opset 13 or newer .* the model has opset 11"):
        to_int8_onnx(old, out, calib=_images(8))
    with pytest.raises(UserError, match="unknown calibration method"):
        to_int8_onnx(fp32_onnx, out, calib=_images(8), method="kl")
    for p in (0, 150):  # ONNX Runtime's own ValueError would come after the whole calibration
        with pytest.raises(UserError, match=rf"--calib-percentile must be in \(0, 100\], got {p}"):
            to_int8_onnx(fp32_onnx, out, calib="fake", percentile=p)
    assert not out.exists()
    int8 = to_int8_onnx(fp32_onnx, tmp_path / "int8.onnx", calib=_images(8))
    with pytest.raises(UserError, match="already quantized"):
        quantize_int8(onnx.load(str(int8)), _images(8))
    with pytest.raises(UserError, match="already quantized"):
        to_fp16_onnx(int8, tmp_path / "fp16-of-int8.onnx")
    assert not (tmp_path / "fp16-of-int8.onnx").exists()


def test_cli_fp16_export(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(create_model("A0", num_classes=10, in_chans=1).eval(), 2)
    ckpt = tmp_path / "a0.pth"
    save_checkpoint(model, ckpt, img_size=32)
    r = run_cli("repvgg-export", str(ckpt), "--precision", "fp16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "models" / "repvgg-a0-fp16.onnx"
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["precision"] == "fp16" and report["verify"]["ok"] and report["verify"]["casts"] == 2
    assert report["compare"]["max_rel_err"] <= FP16_RTOL and report["compare"]["rtol_limit"] == FP16_RTOL


def test_cli_int8_needs_calib(tmp_path):
    r = run_cli("repvgg-export", "--arch", "A0", "--random-init", "--precision", "int8", "-o", str(tmp_path / "a.onnx"))
    assert r.returncode == 2 and "--calib" in r.stderr.strip().splitlines()[-1]
    r = run_cli("repvgg-export", "--arch", "A0", "--random-init", "--precision", "int8", "--calib", "fake",
                "--opset", "11", "-o", str(tmp_path / "a.onnx"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "repvgg-export: error: --precision int8 needs --opset 13 or newer (per-channel Q/DQ), got 11"]
    assert not list(tmp_path.iterdir())


def test_cli_int8_export_with_a_fixed_batch_above_the_comparison_images(tmp_path):
    """--batch 70 with 8 calibration and 64 comparison images: both are filled up to the fixed batch."""
    out = tmp_path / "a0-b70-int8.onnx"
    r = run_cli("repvgg-export", "--arch", "A0", "--random-init", "--num-classes", "10", "--in-chans", "1",
                "--img-size", "32", "--batch", "70", "--precision", "int8", "--calib", "fake", "--calib-images", "8",
                "--calib-method", "minmax", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["batch"] == 70 and report["compare"]["n"] == 70 and report["int8"]["problems"] == []
    assert report["calibration"]["images"] == 8


def test_eval_names_the_kernels_an_int8_file_ran_on(tmp_path, fp32_onnx, int8_onnx):
    """repvgg-eval says when ONNX Runtime ran a TensorRT-form INT8 file's convolutions in FP32."""
    from repvgg_deploy.utils.env import cpu_int8_saturates

    trt = to_int8_onnx(fp32_onnx, tmp_path / "trt.onnx", calib=_images(16, seed=1))
    lines = {}
    for name, path in (("tensorrt", trt), ("onnxruntime", int8_onnx)):
        r = run_cli("repvgg-eval", str(path), "--data", "fake", "--limit", "16")
        assert r.returncode == 0, r.stderr
        lines[name] = r.stdout.strip()
    assert "TensorRT Q/DQ: FP32 convs in ONNX Runtime" in lines["tensorrt"] and "u8u8" not in lines["tensorrt"]
    assert "TensorRT Q/DQ" not in lines["onnxruntime"]
    assert ("u8u8 int8 kernels (x64quantprecision)" in lines["onnxruntime"]) == cpu_int8_saturates()

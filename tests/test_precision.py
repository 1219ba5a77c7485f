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
    assert verify_onnx(out).ok
    meta = get_metadata(proto)
    expected = {"method": method, "images": 64, "source": "array"}
    if method == "percentile":
        expected["percentile"] = 99.99
    assert meta["precision"] == "int8" and meta["calibration"] == expected
    x = _images(16, seed=2)
    ref, got = OnnxrtRunner(fp32_onnx)(x), OnnxrtRunner(out)(x)
    assert _rel(ref, got) <= INT8_RTOL


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory, fp32_onnx):
    return to_int8_onnx(fp32_onnx, tmp_path_factory.mktemp("int8") / "qa-a0-int8.onnx", calib=_images(64, seed=1))


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
    exact = _rel(simulated, _session_out(int8_onnx, x, x64_quant_precision=True))
    fast = _rel(simulated, _session_out(int8_onnx, x, x64_quant_precision=False))
    assert fast > 1.5 * exact  # 0.30 against 0.11 on an AVX2 EPYC
    assert _rel(simulated, _session_out(int8_onnx, x)) == exact  # the default (auto) picks the exact kernels here
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


def test_int8_bad_inputs(tmp_path, fp32_onnx):
    out = tmp_path / "x.onnx"
    with pytest.raises(UserError, match="--calib"):
        to_int8_onnx(fp32_onnx, out, calib=None)
    with pytest.raises(UserError, match="calibration images are 3x32x32 but the model takes 1x32x32"):
        to_int8_onnx(fp32_onnx, out, calib=_images(8, c=3))
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
    assert not list(tmp_path.iterdir())

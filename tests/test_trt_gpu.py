"""TensorRT on a GPU: build A0 engines (FP32, FP16, INT8), compare with ONNX Runtime, inspect, run.

Skipped, with the reason, where TensorRT or an NVIDIA GPU is missing. INT8 calibration data:
``REPVGG_TEST_CALIB`` (default ``random``), passed to ``repvgg_deploy.quantize.to_int8_onnx``.
"""
import json
import os

import numpy as np
import pytest
import torch

from repvgg_deploy import create_model, export_onnx
from repvgg_deploy.backend.onnxrt import OnnxrtRunner
from repvgg_deploy.errors import UserError

from conftest import randomize_bn, run_cli


def _have_trt_gpu():
    if not torch.cuda.is_available():
        return False, "no NVIDIA GPU (torch.cuda.is_available() is False)"
    try:
        import tensorrt  # noqa: F401
    except Exception as e:
        return False, f"TensorRT is not importable ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})"
    return True, ""


_OK, _WHY = _have_trt_gpu()
pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not _OK, reason=f"needs TensorRT and an NVIDIA GPU: {_WHY}")]
CALIB = os.environ.get("REPVGG_TEST_CALIB", "random")


@pytest.fixture(scope="module")
def a0(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_bn(create_model("A0", num_classes=10, in_chans=3).eval(), 5)
    folder = tmp_path_factory.mktemp("trt")
    path = folder / "a0.onnx"
    export_onnx(model, path, img_size=64, metadata={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                                     "class_names": [f"class{i}" for i in range(10)]})
    return path


def _inputs(n=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64)).astype(np.float32)


def _compare(engine_path, onnx_path, x):
    from repvgg_deploy.backend.trt import TrtRunner

    ref = OnnxrtRunner(onnx_path)(x).astype(np.float64)
    got = TrtRunner(engine_path)(x).astype(np.float64)
    scale = np.abs(ref).max()
    cos = float((ref * got).sum() / (np.linalg.norm(ref) * np.linalg.norm(got)))
    return {"max_rel_err": float(np.abs(ref - got).max() / scale), "cos": cos,
            "top1": float((ref.argmax(1) == got.argmax(1)).mean())}


def test_fp32_engine_matches_onnxruntime(a0, tmp_path):
    from repvgg_deploy.build import BuildConfig, build_engine, check_engine_compat

    engine = tmp_path / "a0.engine"
    cache = tmp_path / "timing.cache"
    meta = build_engine(a0, engine, BuildConfig(batch=(1, 4, 16), workspace=1 << 30, opt_level=2, tf32=False,
                                                timing_cache=cache))
    assert meta.precision == "fp32" and meta.profile["max"] == [16, 3, 64, 64]
    assert cache.stat().st_size > 0 and meta.build["timing_cache_bytes_out"] > 0
    assert check_engine_compat(engine) is not None
    r = _compare(engine, a0, _inputs())
    assert r["max_rel_err"] < 1e-3 and r["top1"] == 1.0, r
    # the timing cache is read back on the next build
    meta2 = build_engine(a0, tmp_path / "a0b.engine", BuildConfig(batch=(1, 4, 16), opt_level=2, timing_cache=cache))
    assert meta2.build["timing_cache_bytes_in"] > 0


def test_fp16_engine_matches_onnxruntime(a0, tmp_path):
    from repvgg_deploy import quantize
    from repvgg_deploy.build import BuildConfig, build_engine

    fp16 = quantize.to_fp16_onnx(a0, tmp_path / "a0-fp16.onnx")
    meta = build_engine(fp16, tmp_path / "a0-fp16.engine", BuildConfig(batch=(1, 4, 16), opt_level=2))
    assert meta.precision == "fp16"
    r = _compare(tmp_path / "a0-fp16.engine", a0, _inputs())
    assert r["max_rel_err"] < 2e-2 and r["top1"] >= 0.875, r


def test_int8_engine_matches_onnxruntime(a0, tmp_path):
    from repvgg_deploy import quantize
    from repvgg_deploy.backend.trt import load_engine
    from repvgg_deploy.backend.trt.inspector import inspect_engine, summarize
    from repvgg_deploy.build import BuildConfig, build_engine

    int8 = quantize.to_int8_onnx(a0, tmp_path / "a0-int8.onnx", calib=CALIB, calib_images=64)
    engine = tmp_path / "a0-int8.engine"
    meta = build_engine(int8, engine, BuildConfig(batch=(1, 4, 16), opt_level=2))
    assert meta.precision == "int8"
    r = _compare(engine, a0, _inputs())
    assert r["cos"] > 0.95, r
    counts = summarize(inspect_engine(load_engine(engine)))
    assert counts.get("int8", 0) >= 10, counts


def test_runner_graph_and_benchmark(a0, tmp_path):
    from repvgg_deploy.backend.trt import TrtRunner
    from repvgg_deploy.build import BuildConfig, build_engine

    engine = tmp_path / "a0.engine"
    build_engine(a0, engine, BuildConfig(batch=(1, 8, 32), opt_level=1))
    runner = TrtRunner(engine)
    assert runner.profile[0][0] == 1 and runner.max_batch == 32
    x = torch.from_numpy(_inputs(8)).cuda()
    y = runner.infer(x)
    assert y.is_cuda and tuple(y.shape) == (8, 10)
    xb, out = runner.allocate(8)
    xb.copy_(x)
    graph = runner.capture_graph(xb, out)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.allclose(out.float(), y.float(), atol=1e-5)
    stats = runner.benchmark(batch=8, iters=20, warmup=5, cuda_graph=True)
    assert stats["median_ms"] > 0 and stats["images_per_s"] > 0
    with pytest.raises(Exception, match="outside the engine's profile"):
        runner.infer(torch.zeros(33, 3, 64, 64, device="cuda"))
    # buffers are checked before TensorRT gets their raw pointers
    x16 = torch.from_numpy(_inputs(16)).cuda()
    with pytest.raises(UserError, match="holds 80 elements"):
        runner.enqueue(x16, out)  # out was allocated for batch 8
    with pytest.raises(UserError, match="is torch.float16"):
        runner.enqueue(xb.half(), out)
    with pytest.raises(UserError, match="not contiguous"):
        runner.enqueue(xb, torch.empty(10, 8, device="cuda").t())


def test_one_logger_for_builder_and_runtime(a0, tmp_path):
    # TensorRT keeps one logger per process: a build while a Runtime is alive still reports to ours
    from repvgg_deploy.backend.trt import TrtRunner, trt_logger
    from repvgg_deploy.build import BuildConfig, build_engine

    engine = tmp_path / "a0.engine"
    build_engine(a0, engine, BuildConfig(batch=(1, 1, 2), opt_level=0))
    runner = TrtRunner(engine)
    import tensorrt as trt

    assert runner.loaded.logger is trt_logger(trt)
    lines = []
    build_engine(a0, tmp_path / "b.engine", BuildConfig(batch=(1, 1, 2), opt_level=0, verbose=True), log=lines.append)
    assert any(line.startswith("[TensorRT] INFO") for line in lines), lines[:5]


def test_compat_refused_before_deserializing(a0, tmp_path):
    from repvgg_deploy.backend.trt import load_engine
    from repvgg_deploy.build import BuildConfig, EngineCompatError, build_engine, meta_path

    engine = tmp_path / "a0.engine"
    build_engine(a0, engine, BuildConfig(batch=(1, 1, 2), opt_level=0))
    data = json.loads(meta_path(engine).read_text())
    data["tensorrt"]["version"] = "9.0.0.1"
    meta_path(engine).write_text(json.dumps(data))
    with pytest.raises(EngineCompatError, match="built with TensorRT 9.0.0"):
        load_engine(engine)


def test_cli_build_inspect_run(a0, tmp_path):
    from PIL import Image

    engine = tmp_path / "a0.engine"
    r = run_cli("repvgg-trt", "build", str(a0), "-o", str(engine), "--batch", "1:2:4", "--opt-level", "1",
                "--workspace", "512M")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(engine) and (tmp_path / "a0.engine.json").exists()
    r = run_cli("repvgg-trt", "inspect", str(engine))
    assert r.returncode == 0, r.stderr
    assert "profile 0: min (1, 3, 64, 64)" in r.stdout and "layers by precision" in r.stdout
    r = run_cli("repvgg-trt", "inspect", str(engine), "--json")
    info = json.loads(r.stdout)
    assert info["detailed"] and info["layers"] and info["io"][0]["name"] == "input"
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(img)
    r = run_cli("repvgg-trt", "run", str(engine), "--images", str(img), str(img), "--topk", "3", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2 and rows[0]["topk"][0]["name"].startswith("class") and len(rows[0]["topk"]) == 3

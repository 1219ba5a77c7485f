"""repvgg-trt build/inspect/run without TensorRT: flags, files, engine JSON, pre-processing.

Everything here runs on a CPU-only machine. The checks that come before TensorRT (flags, files,
engine JSON, images) are tested for real; the TensorRT-missing message is tested where TensorRT
or a GPU is absent (skipped, with the reason, where both are present).
"""
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from repvgg_deploy import create_model, export_onnx
from repvgg_deploy.build import (BuildConfig, EngineCompatError, EngineMeta, OnnxParseError, check_engine_compat,
                                 check_engine_file, is_repvgg_onnx, meta_path, onnx_precision, parse_batch,
                                 parse_workspace, read_engine_meta, write_engine_meta)
from repvgg_deploy.build.builder import parser_errors
from repvgg_deploy.backend.trt.inspector import layer_precision, summarize
from repvgg_deploy.errors import MissingDependency, UserError
from repvgg_deploy.utils.images import load_image, preprocess_files, preprocess_image, read_labels, resize_size, topk
from repvgg_deploy.utils.io import sha256_file

from conftest import randomize_bn, read_only_dir, run_cli


def trt_cli(*args, cwd=None):
    """``repvgg-trt`` in this process (fast: no interpreter start); same result fields as run_cli."""
    import contextlib
    import io
    from types import SimpleNamespace

    from repvgg_deploy.cli.trt import cli

    out, err, old = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli([str(a) for a in args])
            except SystemExit as e:  # argparse errors
                rc = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(old)
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


def _trt_and_gpu():
    """(TensorRT importable, GPU visible): decides which 'missing' message to expect."""
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except Exception:
        has_trt = False
    return has_trt, torch.cuda.is_available()


HAS_TRT, HAS_GPU = _trt_and_gpu()
needs_missing_trt = pytest.mark.skipif(HAS_TRT and HAS_GPU, reason="TensorRT and a GPU are present: "
                                       "the missing-TensorRT path cannot be exercised here")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def a0_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_bn(create_model("A0", num_classes=10, in_chans=1).eval(), 1)
    path = tmp_path_factory.mktemp("onnx") / "a0.onnx"
    export_onnx(model, path, img_size=32, metadata={"mean": [0.5], "std": [0.25],
                                                     "class_names": [f"c{i}" for i in range(10)]})
    return path


@pytest.fixture(scope="module")
def a0_train_form_onnx(tmp_path_factory):
    model = randomize_bn(create_model("A0", num_classes=10, in_chans=1).eval(), 2)
    path = tmp_path_factory.mktemp("onnx") / "a0-train.onnx"
    export_onnx(model, path, img_size=32, fuse=False)
    return path


def _tiny_onnx(path: Path, batch="N", arch=None, fp16=False, qdq=False) -> Path:
    """Conv1x1 -> GAP -> Flatten -> Gemm: a non-RepVGG classifier built with onnx.helper."""
    ft = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    npt = np.float16 if fp16 else np.float32
    rng = np.random.default_rng(0)
    inits = [
        helper.make_tensor("w", ft, [4, 3, 1, 1], rng.standard_normal(12).astype(npt).tobytes(), raw=True),
        helper.make_tensor("fc_w", ft, [5, 4], rng.standard_normal(20).astype(npt).tobytes(), raw=True),
        helper.make_tensor("fc_b", ft, [5], np.zeros(5, npt).tobytes(), raw=True),
    ]
    nodes = []
    x = "input"
    if qdq:
        inits += [helper.make_tensor("s", TensorProto.FLOAT, [], [0.05]),
                  helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"])]
        x = "xdq"
    nodes += [helper.make_node("Conv", [x, "w"], ["c"], kernel_shape=[1, 1]),
              helper.make_node("GlobalAveragePool", ["c"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", ft, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", ft, [batch, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if arch:
        entry = model.metadata_props.add()
        entry.key, entry.value = "arch", arch
    onnx.save(model, str(path))
    return path


def _fake_engine(tmp_path: Path, name="fake.engine", trt_version="10.8.0.43", gpu=None, size=4096,
                 metadata=None) -> Path:
    """Bytes that pass the file checks (binary, sized) and a matching engine JSON."""
    path = tmp_path / name
    data = b"ftrt" + bytes(np.random.default_rng(0).integers(0, 256, size - 4, dtype=np.uint8))
    path.write_bytes(data)
    gpu = gpu if gpu is not None else {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "sm": "sm_90"}
    meta = EngineMeta(
        engine=path.name, engine_bytes=len(data), engine_sha256=sha256_file(path), engine_magic=data[:4].hex(),
        tensorrt={"version": trt_version, "major": int(trt_version.split(".")[0]), "strongly_typed": True},
        gpu=gpu, precision="fp16", profile={"input": "input", "min": [1, 1, 32, 32], "opt": [8, 1, 32, 32],
                                             "max": [32, 1, 32, 32]},
        io=[{"name": "input", "mode": "input", "dtype": "FLOAT", "shape": [-1, 1, 32, 32]}],
        onnx={"path": "a0.onnx", "sha256": "0" * 64, "metadata": metadata or {
            "arch": "RepVGG-A0", "num_classes": 10, "in_chans": 1, "img_size": 32, "mean": [0.5], "std": [0.25],
            "class_names": [f"c{i}" for i in range(10)]}},
        build={"seconds": 1.0},
    )
    write_engine_meta(path, meta)
    return path


def _png(path: Path, size=(40, 30), mode="RGB") -> Path:
    rng = np.random.default_rng(3)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def _one_error_line(r):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("repvgg-trt: error: "), r.stderr
    return lines[0]


def _assert_missing_trt_line(line: str):
    if not HAS_TRT:
        assert "TensorRT is not installed" in line or "TensorRT is installed but" in line, line
        assert "pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu" in line
        assert "Docker image" in line
    else:
        assert "needs an NVIDIA GPU" in line, line


# --------------------------------------------------------------------------- without TensorRT

@needs_missing_trt
def test_build_without_tensorrt_is_one_line(a0_onnx, tmp_path):
    r = run_cli("repvgg-trt", "build", str(a0_onnx), "-o", str(tmp_path / "a0.engine"), "--batch", "1:4:8",
                "--workspace", "1G", "--opt-level", "2", "--timing-cache", str(tmp_path / "t.cache"))
    _assert_missing_trt_line(_one_error_line(r))
    assert not list(tmp_path.iterdir())  # nothing written


@needs_missing_trt
def test_build_fp16_without_tensorrt_checks_before_converting(a0_onnx, tmp_path):
    r = trt_cli("build", str(a0_onnx), "--fp16", "-o", str(tmp_path / "a0.engine"))
    _assert_missing_trt_line(_one_error_line(r))
    assert not a0_onnx.with_name("a0-fp16.onnx").exists()


@needs_missing_trt
def test_build_default_output_without_tensorrt(a0_onnx, tmp_path):
    r = trt_cli("build", str(a0_onnx), cwd=tmp_path)
    _assert_missing_trt_line(_one_error_line(r))
    assert (tmp_path / "engines").is_dir() and not list((tmp_path / "engines").iterdir())


@needs_missing_trt
def test_inspect_without_tensorrt_is_one_line(tmp_path):
    engine = _fake_engine(tmp_path)
    _assert_missing_trt_line(_one_error_line(run_cli("repvgg-trt", "inspect", str(engine))))
    _assert_missing_trt_line(_one_error_line(run_cli("repvgg-trt", "inspect", str(engine), "--json")))


@needs_missing_trt
def test_run_without_tensorrt_is_one_line(tmp_path):
    engine = _fake_engine(tmp_path)
    img = _png(tmp_path / "a.png")
    _assert_missing_trt_line(_one_error_line(run_cli("repvgg-trt", "run", str(engine), "--images", str(img))))


@needs_missing_trt
def test_library_raises_missing_dependency(a0_onnx, tmp_path):
    from repvgg_deploy.backend.trt import TrtRunner
    from repvgg_deploy.build import build_engine

    with pytest.raises(MissingDependency):
        build_engine(a0_onnx, tmp_path / "a0.engine", BuildConfig(batch=(1, 2, 4)), log=lambda s: None)
    with pytest.raises(MissingDependency):
        TrtRunner(_fake_engine(tmp_path))


@needs_missing_trt
def test_commands_that_skip_tensorrt_give_the_build_error_words(a0_onnx, tmp_path):
    """repvgg-bench --backend auto and repvgg-pipeline skip TensorRT with the same reason (and the
    same install hint) as repvgg-trt build fails with."""
    from repvgg_deploy import pipeline
    from repvgg_deploy.bench.backends import pick_auto_backend, tensorrt_status

    build_line = _one_error_line(trt_cli("build", str(a0_onnx), "-o", str(tmp_path / "a0.engine")))
    _assert_missing_trt_line(build_line)
    reason = build_line[len("repvgg-trt: error: "):]
    assert tensorrt_status() == reason
    assert pipeline.trt_unavailable() == reason  # what the pipeline's TensorRT stage reports as skipped
    backend, device, why = pick_auto_backend()
    assert reason in why and backend != "trt"


def test_verify_still_works_without_tensorrt(a0_onnx):
    r = run_cli("repvgg-trt", "verify", str(a0_onnx))
    assert r.returncode == 0 and r.stdout.startswith("PLAIN:"), r.stderr


# --------------------------------------------------------------------------- flags

@pytest.mark.parametrize("text,expected", [("1:32:256", (1, 32, 256)), ("8", (8, 8, 8)), (" 2:2:2 ", (2, 2, 2)),
                                           (4, (4, 4, 4)), ((1, 1, 64), (1, 1, 64))])
def test_parse_batch(text, expected):
    assert parse_batch(text) == expected


@pytest.mark.parametrize("text,message", [("4:2:8", "MIN 4 > OPT 2"), ("1:64:32", "OPT 64 > MAX 32"),
                                          ("0", "MIN must be >= 1"), ("1:2", "three numbers"),
                                          ("a:b:c", "integers"), ("1:2:3:4", "three numbers")])
def test_parse_batch_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_batch(text)


@pytest.mark.parametrize("batch,message", [("4:2:8", "MIN 4 > OPT 2; need MIN <= OPT <= MAX"),
                                           ("1:64:32", "OPT 64 > MAX 32; need MIN <= OPT <= MAX")])
def test_cli_batch_errors(a0_onnx, tmp_path, batch, message):
    line = _one_error_line(trt_cli("build", str(a0_onnx), "-o", str(tmp_path / "x.engine"),
                                   "--batch", batch))
    assert message in line


@pytest.mark.parametrize("text,expected", [("4G", 4 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29),
                                           ("1073741824", 1 << 30), ("64KiB", 64 << 10), ("2gb", 2 << 30),
                                           (None, None), (1024, 1024)])
def test_parse_workspace(text, expected):
    assert parse_workspace(text) == expected


@pytest.mark.parametrize("text", ["4X", "G", "", "-1G", "0", "1.2.3G"])
def test_parse_workspace_errors(text):
    with pytest.raises(UserError, match="workspace"):
        parse_workspace(text)


def test_cli_workspace_and_opt_level_errors(a0_onnx, tmp_path):
    line = _one_error_line(trt_cli("build", str(a0_onnx), "-o", str(tmp_path / "x.engine"),
                                   "--workspace", "4X"))
    assert "--workspace" in line
    r = trt_cli("build", str(a0_onnx), "--opt-level", "6")
    assert r.returncode == 2 and "--opt-level" in r.stderr


def test_int8_without_calib_names_calib(a0_onnx, tmp_path):
    line = _one_error_line(trt_cli("build", str(a0_onnx), "--int8", "-o", str(tmp_path / "x.engine")))
    assert "--calib" in line
    line = _one_error_line(trt_cli("build", "missing.onnx", "--int8"))
    assert "--calib" in line  # the flag error comes before anything else
    line = _one_error_line(trt_cli("build", str(a0_onnx), "--calib", "x", "-o", str(tmp_path / "x.engine")))
    assert "--calib is only used with --int8" in line
    r = trt_cli("build", str(a0_onnx), "--int8", "--fp16", "--calib", "x")
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_build_read_only_output_folder(a0_onnx, tmp_path):
    ro = read_only_dir(tmp_path)
    line = _one_error_line(trt_cli("build", str(a0_onnx), "-o", str(ro / "x.engine")))
    assert "cannot write to output folder" in line
    line = _one_error_line(trt_cli("build", str(a0_onnx), "-o", str(tmp_path / "x.engine"),
                                   "--timing-cache", str(ro / "t.cache")))
    assert "cannot write to output folder" in line
    line = _one_error_line(trt_cli("build", str(a0_onnx), "-o", str(tmp_path / "nope" / "x.engine")))
    assert "output folder does not exist" in line


def test_build_bad_inputs(a0_onnx, tmp_path):
    line = _one_error_line(trt_cli("build", str(tmp_path / "missing.onnx")))
    assert "ONNX file not found" in line
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 not a protobuf at all" * 10)
    line = _one_error_line(trt_cli("build", str(bad), "-o", str(tmp_path / "x.engine")))
    assert "not an ONNX model" in line
    line = _one_error_line(trt_cli("build", str(a0_onnx), "-o", str(tmp_path / "x.onnx")))
    assert "must not end in .onnx" in line
    (tmp_path / "out.engine").mkdir()
    line = _one_error_line(trt_cli("build", str(a0_onnx), "-o", str(tmp_path / "out.engine")))
    assert "output is a folder, not a file" in line
    line = _one_error_line(trt_cli("build", str(a0_onnx), "-o", str(tmp_path / "x.engine"),
                                   "--timing-cache", str(tmp_path)))
    assert "--timing-cache is a folder" in line


def test_build_fp16_int8_check_the_fp32_source_before_tensorrt(a0_train_form_onnx, tmp_path):
    """--fp16/--int8 give the source every file check of a plain build, before TensorRT and before converting."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 not a protobuf at all" * 10)
    engine = str(tmp_path / "x.engine")
    assert "not an ONNX model" in _one_error_line(trt_cli("build", str(bad), "--fp16", "-o", engine))
    static = _tiny_onnx(tmp_path / "static.onnx", batch=1, arch="resnet18")
    line = _one_error_line(trt_cli("build", str(static), "--fp16", "--batch", "1:2:4", "-o", engine))
    assert "static batch of 1" in line
    line = _one_error_line(trt_cli("build", str(a0_train_form_onnx), "--int8", "--calib", "fake",
                                   "-o", engine))
    assert "body is not plain" in line
    half = _tiny_onnx(tmp_path / "half.onnx", fp16=True)
    line = _one_error_line(trt_cli("build", str(half), "--fp16", "-o", engine))
    assert f"{half} is already fp16; --fp16 converts an FP32 ONNX" in line
    qdq = _tiny_onnx(tmp_path / "qdq.onnx", qdq=True)
    line = _one_error_line(trt_cli("build", str(qdq), "--int8", "--calib", "fake", "-o", engine))
    assert f"{qdq} is already int8; --int8 converts an FP32 ONNX" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "half.onnx", "qdq.onnx", "static.onnx"]
    assert not a0_train_form_onnx.with_name(f"{a0_train_form_onnx.stem}-int8.onnx").exists()


def test_build_refuses_training_form_repvgg(a0_train_form_onnx, tmp_path):
    line = _one_error_line(trt_cli("build", str(a0_train_form_onnx), "-o", str(tmp_path / "x.engine")))
    assert "body is not plain" in line and "RepVGG-A0" in line and "--no-verify" in line


def test_static_batch_onnx_with_batch_profile(tmp_path):
    onnx_path = _tiny_onnx(tmp_path / "static.onnx", batch=1, arch="resnet18")
    line = _one_error_line(trt_cli("build", str(onnx_path), "-o", str(tmp_path / "x.engine"),
                                   "--batch", "1:2:4"))
    assert "static batch of 1" in line


def test_non_repvgg_onnx_skips_the_plain_check(tmp_path):
    onnx_path = _tiny_onnx(tmp_path / "resnet.onnx", arch="resnet18")
    assert not is_repvgg_onnx({"arch": "resnet18"}) and not is_repvgg_onnx({})
    assert is_repvgg_onnx({"arch": "RepVGG-A0"}) and is_repvgg_onnx({"arch": "QARepVGG-B1"})
    r = trt_cli("build", str(onnx_path), "-o", str(tmp_path / "x.engine"))
    if not (HAS_TRT and HAS_GPU):  # reaches the TensorRT check: no 'not plain' error for a non-RepVGG graph
        _assert_missing_trt_line(_one_error_line(r))


def test_onnx_precision(a0_onnx, tmp_path):
    assert onnx_precision(onnx.load(str(a0_onnx))) == "fp32"
    assert onnx_precision(onnx.load(str(_tiny_onnx(tmp_path / "h.onnx", fp16=True)))) == "fp16"
    assert onnx_precision(onnx.load(str(_tiny_onnx(tmp_path / "q.onnx", qdq=True)))) == "int8"
    assert onnx_precision(onnx.load(str(_tiny_onnx(tmp_path / "f.onnx"))), {"precision": "int8"}) == "int8"


def test_parser_error_lines():
    """Formatting of ONNX parser errors, one line per node (duck-typed parser errors, no TensorRT)."""

    class Err:
        def __init__(self, node, name, op, desc):
            self._v = (node, name, op, desc)

        def node(self):
            return self._v[0]

        def node_name(self):
            return self._v[1]

        def node_operator(self):
            return self._v[2]

        def desc(self):
            return self._v[3]

        def code(self):
            return "UNSUPPORTED_NODE"

    class Parser:
        errors = [Err(3, "/stage1/conv", "Conv", "bad\nweights"), Err(-1, "", "", "model is empty")]
        num_errors = 2

        def get_error(self, i):
            return self.errors[i]

    lines = parser_errors(Parser())
    assert lines == ["node 3 (/stage1/conv: Conv): bad weights [UNSUPPORTED_NODE]", "model: model is empty [UNSUPPORTED_NODE]"]
    err = OnnxParseError("x.onnx", lines)
    text = str(err).splitlines()
    assert text[0] == "TensorRT's ONNX parser rejected x.onnx (2 errors):" and text[1].startswith("  node 3")


# --------------------------------------------------------------------------- engine files and JSON

def test_engine_json_roundtrip(tmp_path):
    engine = _fake_engine(tmp_path)
    assert meta_path(engine).name == "fake.engine.json"
    meta = read_engine_meta(engine)
    assert meta.precision == "fp16" and meta.onnx_metadata["img_size"] == 32
    assert json.loads(meta_path(engine).read_text())["format"] == "repvgg-deploy/engine-v1"
    assert check_engine_file(engine, meta) == engine
    assert read_engine_meta(tmp_path / "none.engine") is None


def test_compat_other_tensorrt_version_is_refused_before_deserializing(tmp_path):
    engine = _fake_engine(tmp_path, trt_version="10.8.0.43")
    here = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "sm": "sm_90"}
    with pytest.raises(EngineCompatError) as e:
        check_engine_compat(engine, trt_version="11.4.0.106", gpu=here)
    msg = str(e.value)
    assert "built with TensorRT 10.8.0 on NVIDIA H100 80GB HBM3 (sm_90)" in msg
    assert "this machine has TensorRT 11.4.0 on NVIDIA H100 80GB HBM3 (sm_90)" in msg
    assert "TensorRT version" in msg and "rebuild it" in msg and "\n" not in msg
    # same major, other minor or patch: refused too
    with pytest.raises(EngineCompatError):
        check_engine_compat(engine, trt_version="10.9.0.34", gpu=here)
    # same version (other build number): accepted
    assert check_engine_compat(engine, trt_version="10.8.0.40", gpu=here).precision == "fp16"


def test_compat_other_gpu(tmp_path):
    engine = _fake_engine(tmp_path)
    with pytest.raises(EngineCompatError, match=r"NVIDIA A100-SXM4-80GB \(sm_80\).*GPU compute capability"):
        check_engine_compat(engine, trt_version="10.8.0.43",
                            gpu={"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0", "sm": "sm_80"})
    notes = []
    meta = check_engine_compat(engine, trt_version="10.8.0.43", notes=notes,
                               gpu={"name": "NVIDIA H100 PCIe", "compute_capability": "9.0", "sm": "sm_90"})
    assert meta is not None and len(notes) == 1 and "same compute capability" in notes[0]
    with pytest.raises(EngineCompatError, match="no GPU"):
        check_engine_compat(engine, trt_version="10.8.0.43", gpu={})


def test_compat_without_or_with_broken_json(tmp_path):
    engine = tmp_path / "bare.engine"
    engine.write_bytes(b"ftrt" + bytes(4092))
    notes = []
    assert check_engine_compat(engine, trt_version="10.8.0.43", gpu={}, notes=notes) is None
    assert "not checked" in notes[0]
    meta_path(engine).write_text("{not json")
    with pytest.raises(UserError, match="not a readable engine JSON"):
        check_engine_compat(engine, trt_version="10.8.0.43", gpu={})
    meta_path(engine).write_text("[1, 2]")
    with pytest.raises(UserError, match="JSON object"):
        read_engine_meta(engine)
    meta_path(engine).write_text(json.dumps({"engine": "bare.engine"}))
    with pytest.raises(UserError, match="lacks tensorrt, precision"):
        read_engine_meta(engine)


def test_truncated_and_modified_engine(tmp_path):
    engine = _fake_engine(tmp_path)
    data = engine.read_bytes()
    engine.write_bytes(data[:1000])
    line = _one_error_line(trt_cli("inspect", str(engine)))
    assert "truncated (1000 bytes; the build wrote 4096)" in line and "rebuild" in line
    line = _one_error_line(trt_cli("run", str(engine), "--images", "x.png"))
    assert "truncated" in line
    engine.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(UserError, match="modified or corrupted"):
        check_engine_file(engine, read_engine_meta(engine))
    engine.write_bytes(b"XXXX" + data[4:])
    with pytest.raises(UserError, match="header differs"):
        check_engine_file(engine, read_engine_meta(engine))


def test_not_an_engine(tmp_path, a0_onnx):
    cases = {
        "img.engine": (_png(tmp_path / "img.png").read_bytes(), "a PNG image"),
        "text.engine": (b"hello, I am a text file\n" * 50, "a text file"),
        "ckpt.engine": (b"PK\x03\x04" + bytes(2000), "a zip archive"),
        "empty.engine": (b"", "empty file"),
        "tiny.engine": (bytes(range(200)), "too small to be a TensorRT engine"),
        "model.engine": (a0_onnx.read_bytes(), "an ONNX model"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        line = _one_error_line(trt_cli("inspect", str(tmp_path / name)))
        assert message in line, (name, line)
    assert "engine not found" in _one_error_line(trt_cli("inspect", str(tmp_path / "none.engine")))
    assert "folder" in _one_error_line(trt_cli("inspect", str(tmp_path)))


def test_run_checks_images_before_tensorrt(tmp_path):
    engine = _fake_engine(tmp_path)
    txt = tmp_path / "notes.jpg"
    txt.write_text("this is not an image")
    line = _one_error_line(trt_cli("run", str(engine), "--images", str(_png(tmp_path / "a.png")),
                                   str(txt)))
    assert f"{txt}: not an image" in line
    line = _one_error_line(trt_cli("run", str(engine), "--images", str(tmp_path / "missing.png")))
    assert "image not found" in line
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    line = _one_error_line(trt_cli("run", str(engine), "--images", str(tmp_path / "a.png"),
                                   "--labels", str(labels)))
    assert "has 2 labels but the model has 10 classes" in line
    line = _one_error_line(trt_cli("run", str(engine), "--images", str(tmp_path / "a.png"),
                                   "--crop-pct", "1.5"))
    assert "--crop-pct" in line


# --------------------------------------------------------------------------- pre-processing

def test_load_image_errors(tmp_path):
    txt = tmp_path / "x.png"
    txt.write_text("not an image")
    with pytest.raises(UserError, match="not an image"):
        load_image(txt)
    png = _png(tmp_path / "ok.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(png.read_bytes()[:60])
    with pytest.raises(UserError, match="broken.png: (unreadable image|not an image)"):
        load_image(broken)
    with pytest.raises(UserError, match="image not found"):
        load_image(tmp_path / "none.png")
    assert load_image(png, 1).mode == "L" and load_image(png, 3).mode == "RGB"


def test_preprocess_matches_torchvision_eval_transform(tmp_path):
    from torchvision import transforms

    img = load_image(_png(tmp_path / "a.png", size=(400, 300)))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ref = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                              transforms.Normalize(mean, std)])(img).numpy()
    ours = preprocess_image(img, 224, mean, std)  # crop_pct 0.875 by default at 224
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # portrait image, no crop percentage (small inputs)
    img2 = load_image(_png(tmp_path / "b.png", size=(30, 50)), 1)
    ref2 = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor(),
                               transforms.Normalize([0.5], [0.25])])(img2).numpy()
    np.testing.assert_allclose(preprocess_image(img2, 32, [0.5], [0.25]), ref2, atol=1e-6)


def test_preprocess_numbers_by_hand(tmp_path):
    # 4x2 grayscale, no resize needed for the short side, center crop 2x2 of the middle columns
    pixels = np.array([[0, 51, 102, 255], [255, 204, 153, 0]], dtype=np.uint8)
    img = Image.fromarray(pixels, "L")
    out = preprocess_image(img, 2, [0.5], [0.5], crop_pct=1.0)
    expected = (pixels[:, 1:3].astype(np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(out[0], expected, atol=1e-7)
    assert resize_size(400, 300, 256) == (341, 256) and resize_size(300, 400, 256) == (256, 341)
    # RGB constant image: every pixel of channel c is (v_c/255 - mean_c) / std_c
    rgb = Image.new("RGB", (50, 70), (255, 0, 128))
    out = preprocess_image(rgb, 32, [0.5, 0.5, 0.5], [0.5, 0.25, 0.5])
    np.testing.assert_allclose(out[:, 0, 0], [1.0, -2.0, (128 / 255 - 0.5) / 0.5], atol=1e-6)
    assert np.ptp(out, axis=(1, 2)).max() < 1e-6
    # grayscale from RGB when in_chans is 1 (ITU-R 601-2 luma, PIL's "L")
    path = tmp_path / "rgb.png"
    rgb.save(path)
    gray = preprocess_files([path], {"in_chans": 1, "img_size": 32, "mean": [0.0], "std": [1.0]})
    assert gray.shape == (1, 1, 32, 32)
    np.testing.assert_allclose(gray[0, 0, 0, 0], (255 * 299 + 128 * 114) // 1000 / 255, atol=1 / 255)


def test_preprocess_files_uses_metadata(tmp_path):
    paths = [_png(tmp_path / "a.png", size=(64, 48)), _png(tmp_path / "b.png", size=(48, 64))]
    x = preprocess_files(paths, {"in_chans": 3, "img_size": 32, "mean": [0, 0, 0], "std": [1, 1, 1], "crop_pct": 1.0})
    assert x.shape == (2, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(UserError, match="mean/std"):
        preprocess_files(paths, {"in_chans": 3, "img_size": 32, "mean": [0.5], "std": [0.5]})


def test_topk_and_labels(tmp_path):
    logits = np.array([[0.0, 3.0, 1.0], [5.0, 0.0, 0.0]], np.float32)
    best = topk(logits, 2, ["cat", "dog", "eel"])
    assert [e["name"] for e in best[0]] == ["dog", "eel"] and best[1][0]["name"] == "cat"
    assert sum(e["prob"] for e in topk(logits, 3)[0]) == pytest.approx(1, abs=1e-6)  # a softmax over all classes
    assert [e["logit"] for e in best[0]] == [3.0, 1.0] and [e["index"] for e in best[0]] == [1, 2]
    assert best[0][0]["prob"] == pytest.approx(np.exp(3) / (1 + np.exp(3) + np.exp(1)))
    assert topk(logits, 5)[0][0]["name"] == "1" and len(topk(logits, 5)[0]) == 3
    labels = tmp_path / "l.txt"
    labels.write_text("a\nb\nc\n\n")
    assert read_labels(labels, 3) == ["a", "b", "c"]
    with pytest.raises(UserError, match="2 classes"):
        read_labels(labels, 2)


def test_layer_precision_from_inspector_json():
    trt10 = {"Name": "conv", "LayerType": "CaskConvolution",
             "Inputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
             "Outputs": [{"Name": "y", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
             "TacticName": "sm90_xmma_fprop"}
    assert layer_precision(trt10) == "fp16"  # a conv computes in its input's type (an FP16 conv, int8 written)
    last_conv = {"Name": "conv21", "LayerType": "CaskConvolution",
                 "Inputs": [{"Name": "x", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"},
                            {"Name": "r", "Format/Datatype": "Row major linear FP32"}],
                 "Outputs": [{"Name": "y", "Format/Datatype": "Row major linear FP32"}]}
    assert layer_precision(last_conv) == "int8"  # INT8 conv with a float output (before the float head)
    assert layer_precision({**last_conv, "LayerType": "Reformat"}) == "fp32"  # other layers: what they write
    assert layer_precision({"Outputs": [{"Format/Datatype": "Row major linear FP32"}]}) == "fp32"
    assert layer_precision({"Outputs": [{"DataType": "Half"}]}) == "fp16"
    assert layer_precision({"Outputs": [{"Format/Datatype": "Float"}]}) == "fp32"
    assert layer_precision({"Outputs": [{"Format/Datatype": "N/A due to dynamic shapes"}]}) == "unknown"
    assert layer_precision({"Outputs": [{"Format/Datatype": "Int8"}, {"Format/Datatype": "Float"}]}) == "mixed"
    assert layer_precision({"Weights": {"Type": "Half"}}) == "fp16"
    info = {"layers": [{"precision": "int8"}, {"precision": "int8"}, {"precision": "fp32"}]}
    assert summarize(info) == {"int8": 2, "fp32": 1}


def test_help_lists_subcommands():
    r = run_cli("repvgg-trt", "--help")
    assert r.returncode == 0
    for cmd in ("verify", "build", "inspect", "run"):
        assert cmd in r.stdout
    r = run_cli("repvgg-trt", "build", "--help")
    for flag in ("--fp16", "--int8", "--calib", "--calib-images", "--calib-method", "--batch", "--workspace",
                 "--opt-level", "--timing-cache", "--no-tf32"):
        assert flag in r.stdout, flag

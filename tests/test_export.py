"""ONNX export + plain-body verification, through the library and the CLIs, and their bad inputs."""
import json
import os

import numpy as np
import onnx
import pytest
import torch

from repvgg_deploy import create_model, export_onnx, reparameterize, save_checkpoint, verify_onnx
from repvgg_deploy.backend.onnxrt import OnnxrtRunner
from repvgg_deploy.export import get_metadata

from conftest import randomize_bn, read_only_dir, run_cli


@pytest.fixture(scope="module")
def a0_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_bn(create_model("A0", num_classes=10, in_chans=1).eval(), 3)
    path = tmp_path_factory.mktemp("ckpt") / "a0.pth"
    save_checkpoint(model, path, img_size=32, mean=[0.286], std=[0.353], class_names=[f"c{i}" for i in range(10)])
    return path, model


def test_cli_export_checkpoint_roundtrip(tmp_path, a0_ckpt):
    ckpt, model = a0_ckpt
    out = tmp_path / "a0.onnx"
    r = run_cli("repvgg-export", str(ckpt), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["verify"]["ok"] and report["verify"]["convs"] == 22
    assert report["compare"]["max_rel_err"] < 1e-4 and report["compare"]["top1_agreement"] == 1.0
    assert report["params_before_fusion"] > report["params_after_fusion"]
    assert report["checkpoint_sha256"] and report["onnx_sha256"]
    assert {"torch", "onnx", "onnxruntime"} <= set(report["environment"]["versions"])
    proto = onnx.load(str(out))
    meta = get_metadata(proto)
    assert meta["arch"] == "RepVGG-A0" and meta["num_classes"] == 10 and meta["in_chans"] == 1
    assert meta["img_size"] == 32 and meta["mean"] == [0.286] and meta["class_names"][3] == "c3"
    # dynamic batch: run batch 5 and compare with the training-form model
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    x = np.random.default_rng(1).standard_normal((5, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out_ort = OnnxrtRunner(out)(x)
    assert np.abs(out_ort - ref).max() / np.abs(ref).max() < 1e-5
    assert verify_onnx(out).ok
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_cli_random_init_static_batch_and_default_path(tmp_path):
    r = run_cli("repvgg-export", "--arch", "B1g4", "--random-init", "--img-size", "64", "--batch", "2",
                "--num-classes", "10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "models" / "repvgg-b1g4.onnx"
    assert out.exists() and (tmp_path / "models" / "repvgg-b1g4.json").exists()
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 64, 64]


def test_library_export_and_verify_qa(tmp_path):
    model = randomize_bn(create_model("QA-A0", num_classes=10).eval(), 1)
    out = tmp_path / "qa.onnx"
    export_onnx(model, out, img_size=32)
    result = verify_onnx(out)
    assert result.ok and result.convs == 22 and result.relus == 22
    assert result.head == ["ReduceMean", "Reshape", "Gemm"]


def test_training_form_graph_is_rejected(tmp_path):
    model = randomize_bn(create_model("A0", num_classes=10).eval(), 1)
    out = tmp_path / "train-form.onnx"
    export_onnx(model, out, img_size=32, fuse=False)
    result = verify_onnx(out)
    assert not result.ok
    ops = {o.op for o in result.offences}
    assert {"Add", "Conv"} <= ops
    assert any("kernel [1, 1]" in o.reason for o in result.offences)
    r = run_cli("repvgg-trt", "verify", str(out))
    assert r.returncode == 1
    assert r.stdout.startswith("NOT PLAIN") and "(Add)" in r.stdout and "inputs=" in r.stdout


def test_legacy_exporter_form_is_accepted(tmp_path):
    """GlobalAveragePool/Flatten head (the TorchScript exporter's form) passes too."""
    deploy = reparameterize(randomize_bn(create_model("A0", num_classes=10).eval(), 1))
    out = tmp_path / "legacy.onnx"
    torch.onnx.export(deploy, (torch.randn(1, 3, 32, 32),), str(out), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    result = verify_onnx(out)
    assert result.ok, result.offences
    r = run_cli("repvgg-trt", "verify", str(out), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"]


def test_compare_outputs_by_hand():
    from repvgg_deploy.export.compare import compare_outputs

    r = compare_outputs(np.array([[1, 2], [3, 0]]), np.array([[1, 2.5], [0, 3]]))
    assert (r["max_abs_err"], r["mean_abs_err"], r["output_scale"], r["max_rel_err"]) == (3.0, 1.625, 3.0, 1.0)
    assert r["top1_agreement"] == 0.5 and r["n"] == 2  # row 1 argmax 1 = 1, row 2 argmax 0 != 1
    z = compare_outputs(np.zeros((2, 3)), np.full((2, 3), 0.25))
    assert z["output_scale"] == 1.0 and z["max_rel_err"] == 0.25  # an all-zero reference: scale 1, not a division by 0


def test_hand_made_graphs(tmp_path):
    """A Conv without Relu, a 1x1 conv and a non-plain op: each node is reported."""
    from onnx import TensorProto, helper, numpy_helper

    w3 = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w3")
    w1 = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w1")
    fc = numpy_helper.from_array(np.ones((2, 4), np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w3"], ["c1"], name="conv3", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w1"], ["c2"], name="conv1x1", kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["s"], name="sig"),
        helper.make_node("GlobalAveragePool", ["s"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="gemm", transB=1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w3, w1, fc])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = verify_onnx(path)
    names = {o.name: o.reason for o in result.offences}
    assert not result.ok
    assert "kernel [1, 1]" in names["conv1x1"] and "Relu" in names["conv1x1"]
    assert "Sigmoid" in names["sig"]
    assert "conv3" not in names and "relu1" not in names  # the plain 3x3 Conv + Relu is not an offence


def test_a_branch_is_reported_with_what_is_wrong_with_each_node(tmp_path):
    """An unfused block (x -> 3x3 conv, 1x1 conv -> Add): the fan-out, the 1x1 kernel and the Add."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones(s, np.float32), n)
             for n, s in (("w3", (3, 3, 3, 3)), ("w1", (3, 3, 1, 1)), ("fc", (2, 3)))]
    nodes = [
        helper.make_node("Conv", ["x", "w3"], ["c3"], name="dense", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="one_by_one", kernel_shape=[1, 1]),
        helper.make_node("Add", ["c3", "c1"], ["a"], name="branch_add"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="gemm", transB=1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    result = verify_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    reasons = {}
    for o in result.offences:
        reasons.setdefault(o.name, []).append(o.reason)
    assert not result.ok
    assert any("feeds 2 nodes" in r for r in reasons["dense"]) and any("feeds 2 nodes" in r for r in reasons["one_by_one"])
    assert any("kernel [1, 1]" in r for r in reasons["one_by_one"]), reasons
    assert any("Add is not allowed" in r for r in reasons["branch_add"]), reasons
    assert not any("kernel" in r for r in reasons["dense"])  # the 3x3 conv itself is fine


# ------------------------------------------------------------------ bad input: exit 2, one line, nothing written


def _one_line_error(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], r.stderr
    return errors[0]


def test_bad_inputs(tmp_path, a0_ckpt):
    ckpt, _ = a0_ckpt
    out = tmp_path / "x.onnx"
    assert "unknown arch" in _one_line_error(run_cli("repvgg-export", "--arch", "C7", "--random-init", "-o", str(out)))
    assert "not found" in _one_line_error(run_cli("repvgg-export", str(tmp_path / "missing.pth"), "-o", str(out)))
    empty = tmp_path / "empty.pth"
    empty.touch()
    assert "empty" in _one_line_error(run_cli("repvgg-export", str(empty), "-o", str(out)))
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(ckpt.read_bytes()[:5000])
    assert "truncated" in _one_line_error(run_cli("repvgg-export", str(trunc), "-o", str(out)))
    text = tmp_path / "text.pth"
    text.write_text("hello")
    _one_line_error(run_cli("repvgg-export", str(text), "-o", str(out)))
    assert "RepVGG-A0 checkpoint, not RepVGG-B0" in _one_line_error(
        run_cli("repvgg-export", "--arch", "B0", str(ckpt), "-o", str(out)))
    assert "10 classes, not 100" in _one_line_error(
        run_cli("repvgg-export", str(ckpt), "--num-classes", "100", "-o", str(out)))
    assert "multiple of 32" in _one_line_error(
        run_cli("repvgg-export", str(ckpt), "--img-size", "100", "-o", str(out)))
    assert "does not exist" in _one_line_error(
        run_cli("repvgg-export", str(ckpt), "-o", str(tmp_path / "no" / "such" / "a.onnx")))
    ro = read_only_dir(tmp_path)
    assert "cannot write" in _one_line_error(run_cli("repvgg-export", str(ckpt), "-o", str(ro / "a.onnx")))
    assert "--random-init needs --arch" in _one_line_error(run_cli("repvgg-export", "--random-init", "-o", str(out)))
    assert "--compare-batch" in _one_line_error(run_cli("repvgg-export", str(ckpt), "--compare-batch", "0", "-o", str(out)))
    (tmp_path / "dir.onnx").mkdir()
    assert "output is a folder, not a file" in _one_line_error(run_cli("repvgg-export", str(ckpt), "-o",
                                                                       str(tmp_path / "dir.onnx")))
    (tmp_path / "dir.onnx").rmdir()
    not_onnx = tmp_path / "fake.onnx"
    not_onnx.write_text("definitely not protobuf \x00\xff")
    assert "not an ONNX model" in _one_line_error(run_cli("repvgg-trt", "verify", str(not_onnx)))
    assert "not found" in _one_line_error(run_cli("repvgg-trt", "verify", str(tmp_path / "none.onnx")))
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_deploy_checkpoint_given_where_training_expected(tmp_path, a0_ckpt):
    _, model = a0_ckpt
    path = tmp_path / "deploy.pth"
    save_checkpoint(reparameterize(model), path, img_size=32)
    out = tmp_path / "d.onnx"
    r = run_cli("repvgg-export", "--arch", "A0", str(path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["compare"]["reference"] == "pytorch deploy form"
    assert report["params_before_fusion"] == report["params_after_fusion"]


def test_failed_check_writes_nothing(tmp_path, a0_ckpt):
    ckpt, _ = a0_ckpt
    out = tmp_path / "strict.onnx"
    r = run_cli("repvgg-export", str(ckpt), "-o", str(out), "--rtol", "0")
    line = _one_line_error(r)
    assert "differs from PyTorch" in line
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_opset_below_18_is_the_opset_written(tmp_path, a0_ckpt):
    """--opset 13 gives an opset-13 file (TorchScript exporter), the report says so, and no traceback is printed."""
    ckpt, model = a0_ckpt
    out = tmp_path / "a0-op13.onnx"
    r = run_cli("repvgg-export", str(ckpt), "--opset", "13", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "onnxscript" not in r.stderr, r.stderr
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["opset"] == 13 and report["verify"]["ok"] and report["compare"]["max_rel_err"] < 1e-4
    assert verify_onnx(out).head == ["GlobalAveragePool", "Flatten", "Gemm"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(2).standard_normal((5, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(OnnxrtRunner(out)(x) - ref).max() / np.abs(ref).max() < 1e-5


def test_every_opset_in_range_is_written_as_asked_and_others_are_refused(tmp_path):
    from repvgg_deploy.export import ExportError, to_onnx_proto
    from repvgg_deploy.export.onnx_export import MIN_OPSET, max_opset

    deploy = reparameterize(randomize_bn(create_model("A0", num_classes=10).eval(), 1))
    for opset in (MIN_OPSET, 11, 17, 18, 20):
        proto = to_onnx_proto(deploy, img_size=32, batch=2, opset=opset)
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
        assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 32, 32]
        assert verify_onnx(proto).ok, opset
    for opset in (MIN_OPSET - 1, max_opset() + 1):
        with pytest.raises(ExportError, match=f"opset {opset} cannot be exported: supported opsets are {MIN_OPSET} to"):
            to_onnx_proto(deploy, img_size=32, opset=opset)
    out = tmp_path / "x.onnx"
    assert f"--opset: must be >= {MIN_OPSET}, got 5" in _one_line_error(
        run_cli("repvgg-export", "--arch", "A0", "--random-init", "--opset", "5", "-o", str(out)))
    assert f"--opset: must be <= {max_opset()}" in _one_line_error(
        run_cli("repvgg-export", "--arch", "A0", "--random-init", "--opset", str(max_opset() + 1), "-o", str(out)))
    assert not out.exists()


def test_metadata_values_keep_their_type():
    from repvgg_deploy.export import set_metadata

    proto = onnx.ModelProto()
    values = {"plain": "RepVGG-A0", "digits": "2024", "word_true": "true", "quoted": '"x"', "list_of_str": ["0", "1"],
              "number": 3, "flag": False, "nested": {"target": "tensorrt"}, "none": None}
    set_metadata(proto, values)
    assert get_metadata(proto) == values
    raw = {p.key: p.value for p in proto.metadata_props}
    assert raw["plain"] == "RepVGG-A0"  # a plain string stays readable as it is
    assert raw["digits"] == '"2024"'

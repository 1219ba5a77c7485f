"""repvgg-bench: statistics, interleaving, FLOP counting, model sources, discovery, reports and the CLI.

Real libraries throughout (torch, torchvision, onnx, ONNX Runtime, matplotlib); the CPU runs use
small inputs and short windows. CUDA/TensorRT tests skip without a GPU.
"""
import csv
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from repvgg_deploy import create_model, export_onnx
from repvgg_deploy.bench import stats
from repvgg_deploy.bench.backends import (Case, OrtTarget, Target, TorchTarget, TrtTarget, _profile_from_json,
                                          tensorrt_status)
from repvgg_deploy.bench.flops import count_macs
from repvgg_deploy.bench.measure import interleave, run_window
from repvgg_deploy.bench.models import build_model, known_models, paper_table4_models, resolve_model
from repvgg_deploy.bench.paper import paper_comparisons
from repvgg_deploy.bench.measure import Window
from repvgg_deploy.bench.runner import FlopCounter, PlanItem, Row, Settings, row_record, run_benchmark
from repvgg_deploy.errors import UnknownArchError, UserError
from repvgg_deploy.export import to_onnx_proto
from repvgg_deploy.fuse import reparameterize
from repvgg_deploy.reference import paper_row, paper_table

from conftest import has_cuda, randomize_bn, run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------- statistics
def test_summary_statistics_on_known_arrays():
    s = stats.summarize(list(range(1, 101)))  # 1..100
    assert s["min"] == 1 and s["max"] == 100
    assert s["mean"] == pytest.approx(50.5)
    assert s["median"] == pytest.approx(50.5)
    # linear interpolation: rank (n - 1) * p / 100 -> 1 + 99 * 0.9 = 90.1
    assert s["p90"] == pytest.approx(90.1)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)
    assert s["cv"] == pytest.approx(math.sqrt((100 ** 2 - 1) / 12) / 50.5)
    assert stats.summarize([2.0, 2.0, 2.0])["cv"] == 0
    assert stats.percentile([5.0], 99) == 5.0
    assert stats.coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        stats.summarize([])
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert stats.spearman([1, 2, 3], [1, 1, 2]) == pytest.approx(np.corrcoef([1, 2, 3], [1.5, 1.5, 3])[0, 1])
    assert stats.spearman([1, 2], [1, 2]) is None


# --------------------------------------------------------------------------------------------- interleaving
def test_interleave_order():
    assert list(interleave(["A", "B", "C"], 2)) == [(0, "A"), (0, "B"), (0, "C"), (1, "A"), (1, "B"), (1, "C")]
    assert list(interleave(["A"], 3)) == [(0, "A"), (1, "A"), (2, "A")]
    assert list(interleave([], 3)) == []


class _LoggingTarget(Target):
    """A real (trivial) backend: one NumPy matmul per step, logging when each timing window starts."""

    backend = "numpy"

    def __init__(self, name, log):
        super().__init__()
        self.name, self.log, self.img_size = name, log, 8

    def load(self):
        self.w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)

    def case(self, batch):
        return _LoggingCase(self, batch)


class _LoggingCase(Case):
    def setup(self, buffers, seed):
        self.x = np.ones((self.batch, 64), np.float32)

    def activate(self):
        self.target.log.append(self.target.name)

    def step(self, i):
        self.x @ self.target.w


def test_runner_interleaves_models_within_each_batch():
    log = []
    plan = [PlanItem(_LoggingTarget(n, log), n, n, None, [1, 2]) for n in "AB"]
    s = Settings(warmup_s=0, warmup_iters=1, duration_s=0.001, min_iters=2, rounds=3, rewarm_iters=1)
    rows = run_benchmark(plan, s, progress=False)
    # per batch: set-up A, set-up B, then rounds A B A B A B
    assert log == (["A", "B"] + ["A", "B"] * 3) * 2
    assert [(r.item.label, r.batch) for r in rows] == [("A", 1), ("A", 2), ("B", 1), ("B", 2)]
    assert all(r.ok and len(r.windows) == 3 for r in rows)
    rec = row_record(rows[1], s)
    assert rec["batch"] == 2 and rec["iterations"] >= 6 and rec["timing"] == "host-clock"
    assert rec["images_per_s"] == pytest.approx(2 * rec["throughput_qps"])
    assert rec["latency_ms_min"] <= rec["latency_ms_median"] <= rec["latency_ms_p99"] <= rec["latency_ms_max"]


def test_run_window_honours_duration_and_min_iters():
    class Quick(Case):
        def step(self, i):
            pass

    w = run_window(Quick(None, 1), duration=0.0, min_iters=7)
    assert w.iters == 7 and w.wall_s >= 0
    w = run_window(Quick(None, 1), duration=0.02, min_iters=1)
    assert w.wall_s >= 0.02 and w.iters > 1


# --------------------------------------------------------------------------------------------- FLOPs
def test_flop_formulas_on_a_hand_made_graph():
    # Conv 3x3 (groups 2), Gemm with transB, MatMul; all shapes static
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [6, 2, 3, 3], np.ones(108, np.float32))
    g = helper.make_tensor("g", TensorProto.FLOAT, [5, 6 * 4 * 4], np.ones(5 * 96, np.float32))
    m = helper.make_tensor("m", TensorProto.FLOAT, [5, 7], np.ones(35, np.float32))
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], np.array([-1, 96], np.int64))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], group=2),
        helper.make_node("Reshape", ["c", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["z"], transB=1),
        helper.make_node("MatMul", ["z", "m"], ["y"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "t", [x], [y], [w, g, m, shape]),
                              opset_imports=[helper.make_opsetid("", 17)])
    c = count_macs(model)
    conv = 6 * 4 * 4 * (2 * 3 * 3)  # Cout * Hout * Wout * Cin/groups * k * k, per image
    assert c["by_op"] == {"Conv": conv, "Gemm": 5 * 96, "MatMul": 7 * 5}
    assert c.macs == conv + 5 * 96 + 35 and c["uncounted"] == []


@pytest.fixture(scope="module")
def paper_protos():
    torch.manual_seed(0)
    return {
        "RepVGG-A0": to_onnx_proto(reparameterize(create_model("A0").eval()), img_size=224, batch=None),
        "ResNet-18": to_onnx_proto(build_model(resolve_model("resnet18")), img_size=224, batch=1),
    }


def test_flops_match_the_paper(paper_protos):
    for name, proto in paper_protos.items():
        gmacs = count_macs(proto).macs / 1e9
        assert gmacs == pytest.approx(paper_row(name).flops_b, rel=0.04), name  # A0 1.36 vs 1.4, R18 1.81 vs 1.8
    assert count_macs(paper_protos["RepVGG-A0"]).macs == pytest.approx(1.3615e9, rel=1e-3)


@pytest.mark.slow
def test_flops_resnet50_and_training_form():
    r50 = count_macs(to_onnx_proto(build_model(resolve_model("resnet50")), img_size=224, batch=1)).macs / 1e9
    assert r50 == pytest.approx(4.09, abs=0.02)  # torchvision's ResNet-50 (v1.5); the paper lists 3.9
    assert r50 == pytest.approx(paper_row("ResNet-50").flops_b, rel=0.06)
    train = count_macs(to_onnx_proto(create_model("A0").eval(), img_size=224, batch=1)).macs
    assert train > 1.3615e9 * 1.1  # the 1x1 branches cost about 11% more multiply-adds


@pytest.fixture(scope="module")
def a0_files(tmp_path_factory):
    """One small fused A0 (random BN, so every conv has a bias) as FP32 (dynamic and static batch 4),
    FP16 and INT8 Q/DQ files, the project's own conversions; ``params``: the PyTorch count."""
    from repvgg_deploy.quantize import to_fp16_onnx, to_int8_onnx

    torch.manual_seed(0)
    model = reparameterize(randomize_bn(create_model("A0", num_classes=10, in_chans=1).eval(), 1))
    d = tmp_path_factory.mktemp("a0files")
    files = {"fp32": d / "a0.onnx", "fp32_b4": d / "a0-b4.onnx", "fp16": d / "a0-fp16.onnx", "int8": d / "a0-int8.onnx"}
    export_onnx(model, files["fp32"], img_size=32)
    export_onnx(model, files["fp32_b4"], img_size=32, batch=4)
    to_fp16_onnx(files["fp32"], files["fp16"])
    calib = np.random.default_rng(1).standard_normal((8, 1, 32, 32)).astype(np.float32)
    to_int8_onnx(files["fp32"], files["int8"], calib=calib, method="minmax")
    files["int8_ort"] = d / "a0-int8-ort.onnx"
    to_int8_onnx(files["fp32"], files["int8_ort"], calib=calib, method="minmax", target="onnxruntime")
    return {**files, "params": sum(p.numel() for p in model.parameters())}


def test_static_batch_flops_are_per_image(a0_files):
    dyn, b4 = count_macs(a0_files["fp32"]), count_macs(a0_files["fp32_b4"])
    assert b4.macs == dyn.macs > 0 and b4["by_op"] == dyn["by_op"] and b4["uncounted"] == []
    assert (dyn["batch"], b4["batch"]) == (1, 4)
    # the bench's own path for a file: OrtTarget, then FlopCounter
    t = OrtTarget("cpu", 1, path=a0_files["fp32_b4"])
    t.load()
    assert t.input_shape[0] == 4
    assert FlopCounter().count(PlanItem(t, "a0-b4.onnx", str(a0_files["fp32_b4"]))) == (dyn.macs, None)
    t.unload()


def test_file_parameter_counts_agree_across_precisions(a0_files):
    # INT8 weights count, the Q/DQ scales and zero points (per channel: 1-D) do not
    counts, options = {}, {}
    for precision in ("fp32", "fp16", "int8", "int8_ort"):
        t = OrtTarget("cpu", 1, path=a0_files[precision])
        t.load()
        counts[precision], options[precision] = (t.precision, t.params), t.options
        t.unload()
    n = a0_files["params"]
    assert counts == {"fp32": ("fp32", n), "fp16": ("fp16", n), "int8": ("int8", n), "int8_ort": ("int8", n)}
    # the options column says when ONNX Runtime runs an INT8 file's convolutions in FP32 (TensorRT's Q/DQ form)
    from repvgg_deploy.utils.env import cpu_int8_saturates

    assert options["fp32"] == options["fp16"] == "" and options["int8"] == "fp32 convs (TensorRT Q/DQ)"
    assert options["int8_ort"] == ("x64quantprecision" if cpu_int8_saturates() else "")


def test_qdq_files_without_metadata_are_labelled_int8(a0_files, tmp_path):
    # another tool's Q/DQ file carries no "precision" metadata: the graph says what it is
    import onnx

    labels = {}
    for name in ("fp32", "int8", "int8_ort"):
        proto = onnx.load(str(a0_files[name]))
        del proto.metadata_props[:]
        bare = tmp_path / f"{name}-bare.onnx"
        onnx.save(proto, str(bare))
        t = OrtTarget("cpu", 1, path=bare)
        t.load()
        labels[name] = t.precision
        t.unload()
    assert labels == {"fp32": "fp32", "int8": "int8", "int8_ort": "int8"}


# --------------------------------------------------------------------------------------------- models
def test_model_names_and_paper_mapping():
    assert resolve_model("RepVGG-A0").key == "repvgg-a0" and resolve_model("A0").fused
    assert resolve_model("repvgg_a0_train").key == "repvgg-a0-train"
    assert not resolve_model("repvgg-a0-train").fused
    assert resolve_model("QA-A0").key == "qarepvgg-a0"
    assert resolve_model("qarepvgg-a0-train").key == "qarepvgg-a0-train"
    for paper, key in [("ResNet-50", "resnet50"), ("ResNeXt-50", "resnext50_32x4d"), ("ResNeXt-101", "resnext101_32x4d"),
                       ("VGG-16", "vgg16"), ("EfficientNet-B0", "efficientnet_b0"), ("EfficientNet-B3", "efficientnet_b3"),
                       ("RegNetX-3.2GF", "regnet_x_3_2gf"), ("RegNetX-12GF", "regnet_x_12gf")]:
        assert resolve_model(paper).key == key
    t4 = paper_table4_models()
    assert [s.paper_name for s in t4] == [r.model for r in paper_table() if r.table == 4]
    assert len(t4) == 19 and all(s.fused for s in t4 if s.is_repvgg)
    assert {"repvgg-b3", "repvgg-b1g4-train", "resnet152", "resnext101_32x8d"} <= set(known_models())
    with pytest.raises(UnknownArchError, match="known: repvgg-a0.*resnet50"):
        resolve_model("resnet9000")
    with pytest.raises(UserError, match="training form"):
        resolve_model("resnet50-train")


@pytest.mark.slow
def test_baseline_parameter_counts_match_the_paper():
    # torchvision builders, weights=None; ResNeXt-101 of Table 4 is the 32x4d variant (44.1 M), RegNetX-12GF pycls's
    for name in ("ResNeXt-101", "ResNeXt-50", "RegNetX-3.2GF", "RegNetX-12GF", "VGG-16", "EfficientNet-B0"):
        model = build_model(resolve_model(name))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert params == pytest.approx(paper_row(name).params_m, rel=0.01), name


# --------------------------------------------------------------------------------------------- paper mode
def _rec(name, speed, batch=128, precision="fp32", img=224, status="ok"):
    spec = resolve_model(name)
    return {"model": spec.display, "model_key": spec.key, "family": spec.family, "backend": "torch", "device": "cuda",
            "precision": precision, "batch": batch, "img_size": img, "options": "", "status": status,
            "images_per_s": speed if status == "ok" else None, "paper_name": spec.paper_name, "params_m": 1.0,
            "gmacs": 1.0}


def test_paper_table_rows_and_ratio_to_resnet50():
    names = [r.model for r in paper_table() if r.table == 4]
    recs = [_rec(n, paper_row(n).speed_1080ti * 2.0) for n in names]  # a machine exactly twice as fast
    [comp] = paper_comparisons(recs)
    assert [r["model"] for r in comp["rows"]] == names and comp["batch"] == 128 and comp["notes"] == []
    by = {r["model"]: r for r in comp["rows"]}
    assert by["ResNet-50"]["paper_ratio"] == pytest.approx(1.0) and by["ResNet-50"]["measured_ratio"] == pytest.approx(1.0)
    assert by["RepVGG-A0"]["paper_ratio"] == pytest.approx(3256 / 719)
    assert by["RepVGG-A0"]["measured_ratio"] == pytest.approx(3256 / 719)
    assert by["RepVGG-A0"]["paper_top1"] == pytest.approx(72.41)
    assert comp["spearman"] == pytest.approx(1.0)
    # one model slower than the paper says, one failed; batch overridden
    recs = [_rec("ResNet-50", 100.0, batch=8), _rec("RepVGG-A0", 250.0, batch=8), _rec("ResNet-18", 0, batch=8, status="failed")]
    [comp] = paper_comparisons(recs)
    by = {r["model"]: r for r in comp["rows"]}
    assert by["RepVGG-A0"]["measured_ratio"] == pytest.approx(2.5)
    assert by["ResNet-18"]["measured_ratio"] is None and by["ResNet-18"]["status"] == "failed"
    assert by["VGG-16"]["status"] == "not run"
    assert any("batch 8" in n for n in comp["notes"])
    # no ResNet-50: no measured ratios, said so
    [comp] = paper_comparisons([_rec("RepVGG-A0", 250.0)])
    assert all(r["measured_ratio"] is None for r in comp["rows"]) and any("ResNet-50" in n for n in comp["notes"])


@pytest.mark.slow
def test_cli_paper_mode_on_cpu(tmp_path):
    out = tmp_path / "paper"
    r = run_cli("repvgg-bench", "--paper-table4", "--device", "cpu", "--batch", "1", "--img-size", "32",
                "--duration", "0.02", "--rounds", "1", "--min-iters", "2", "--warmup", "0", "--warmup-iters", "1",
                "--no-flops", "--no-progress", "--threads", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["backend"] == "torch"
    [comp] = doc["paper"]
    assert len(comp["rows"]) == 19 and all(row["measured_speed"] for row in comp["rows"])
    assert any("batch 1" in n for n in comp["notes"]) and any("32x32" in n for n in comp["notes"])
    md = (out / "report.md").read_text()
    assert "ratio to ResNet-50 (paper)" in md and "not the paper's 128" in md
    assert (out / "speed_vs_accuracy.png").read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------------------------- CLI
def test_cli_ort_cpu_run_writes_every_report_file(tmp_path):
    out = tmp_path / "run1"
    r = run_cli("repvgg-bench", "--models", "repvgg-a0", "--backend", "ort", "--device", "cpu", "--img-size", "64",
                "--batch", "1,2", "--duration", "0.2", "--rounds", "2", "--warmup", "0.05", "--threads", "1",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "| RepVGG-A0 | ort | cpu | fp32 | 1 |" in r.stdout
    doc = json.loads((out / "results.json").read_text())
    recs = doc["results"]
    assert [(x["batch"], x["status"]) for x in recs] == [(1, "ok"), (2, "ok")]
    for x in recs:
        assert x["precision"] == "fp32" and x["img_size"] == 64 and x["timing"] == "host-clock"
        assert x["rounds"] == 2 and x["iterations"] >= 20 and x["images_per_s"] > 0
        # convs scale with the pixel count; the 1280x1000 head does not
        assert x["gmacs"] == pytest.approx((1.36017 - 0.00128) * (64 / 224) ** 2 + 0.00128, rel=1e-3)
        assert x["tflops"] == pytest.approx(2 * x["gmacs"] * x["images_per_s"] / 1e3)
        assert x["paper_top1"] == pytest.approx(72.41) and x["params_m"] == pytest.approx(8.31, abs=0.01)
    assert doc["settings"]["threads"] >= 1 and doc["environment"]["cpu"]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["images_per_s"]) > 0 and rows[0]["batch"] == "1"
    md = (out / "report.md").read_text()
    assert "## Environment" in md and "| RepVGG-A0 | ort | cpu | fp32 | 2 | 64 |" in md
    for png in ("throughput_vs_batch.png", "speed_vs_accuracy.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert not list(out.glob("*.tmp"))


def test_cli_torch_cpu_training_vs_fused(tmp_path):
    r = run_cli("repvgg-bench", "--models", "repvgg-a0,repvgg-a0-train", "--backend", "torch", "--device", "cpu",
                "--img-size", "32", "--duration", "0.1", "--rounds", "2", "--warmup", "0", "--no-progress", "--threads", "1",
                "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    fused, train = json.loads((tmp_path / "results.json").read_text())["results"]
    assert fused["model_key"] == "repvgg-a0" and train["model_key"] == "repvgg-a0-train"
    assert fused["backend"] == "torch" and fused["status"] == train["status"] == "ok"
    assert train["gmacs"] > fused["gmacs"] and train["params_m"] > fused["params_m"]


def _folder_with_onnx(tmp_path: Path) -> Path:
    folder = tmp_path / "engines"
    folder.mkdir()
    export_onnx(reparameterize(create_model("A0").eval()), folder / "a0.onnx", img_size=32)
    return folder


def test_cli_folder_discovery_skips_junk_and_exit_codes(tmp_path):
    folder = _folder_with_onnx(tmp_path)
    (folder / "junk.bin").write_bytes(b"\x00not a model")
    (folder / "broken.onnx").write_text("this is not protobuf")
    (folder / "README.md").write_text("engines go here")  # a README is not a warning
    (folder / "fake.engine").write_bytes(b"\x01" * 64)
    args = ("--batch", "1,2", "--duration", "0.05", "--rounds", "1", "--warmup", "0", "--no-progress", "--threads", "1")
    r = run_cli("repvgg-bench", str(folder), *args)
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stderr and "junk.bin" in r.stderr and "broken.onnx" in r.stderr
    assert "README" not in r.stderr
    if tensorrt_status() is not None:
        assert "fake.engine" in r.stderr and "TensorRT" in r.stderr
    assert "| a0.onnx (RepVGG-A0) | ort | cpu | fp32 | 2 | 32 |" in r.stdout
    # only junk: nothing could be run -> exit 2 and one error line
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("hello")
    (junk / "b.onnx").write_bytes(b"\x08\x07garbage")
    r = run_cli("repvgg-bench", str(junk), *args, "--out", str(tmp_path / "report"))
    assert r.returncode == 2 and "error: nothing could be run" in r.stderr
    assert not (tmp_path / "report").exists()  # --out is made only once something can run
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("repvgg-bench", str(empty))
    assert r.returncode == 2 and "empty" in r.stderr
    r = run_cli("repvgg-bench", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_cli_static_batch_row_fails_others_go_on(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    export_onnx(reparameterize(create_model("A0").eval()), folder / "a0-b2.onnx", img_size=32, batch=2)
    r = run_cli("repvgg-bench", str(folder), "--batch", "1,2", "--duration", "0.05", "--rounds", "1", "--warmup", "0",
                "--no-progress", "--threads", "1", "--out", str(tmp_path / "out"))
    assert r.returncode == 1, r.stderr  # one row failed, the other ran
    recs = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [(x["batch"], x["status"]) for x in recs] == [(1, "failed"), (2, "ok")]
    assert "static batch of 2" in recs[0]["error"]
    assert "## Failed rows" in (tmp_path / "out" / "report.md").read_text()


def test_cli_unknown_model_lists_known_ones():
    r = run_cli("repvgg-bench", "--models", "repvgg-a0,resnet9000")
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "unknown model 'resnet9000'" in line and "repvgg-a0" in line and "resnet50" in line and "efficientnet_b0" in line
    r = run_cli("repvgg-bench")
    assert r.returncode == 2 and "nothing to benchmark" in r.stderr


@pytest.mark.skipif(has_cuda, reason="checks the CPU-only error messages")
def test_cli_cuda_only_options_fail_cleanly_on_cpu():
    for args, words in [
        (("--cuda-graphs", "--backend", "torch", "--device", "cpu"), "--cuda-graphs needs --device cuda"),
        (("--backend", "torch", "--precision", "fp16"), "--precision fp16 needs --device cuda"),
        (("--backend", "torch", "--device", "cpu", "--precision", "tf32"), "--precision tf32 needs --device cuda"),
        (("--measure-peak", "--backend", "torch"), "--measure-peak needs --device cuda"),
        (("--backend", "torch", "--device", "cuda"), "no CUDA GPU"),
        (("--backend", "ort", "--precision", "fp16"), "--backend ort runs the FP32"),
    ]:
        r = run_cli("repvgg-bench", "--models", "repvgg-a0", *args)
        assert r.returncode == 2, (args, r.stderr)
        err = r.stderr.strip().splitlines()
        assert len(err) <= 2 and words in err[-1], (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_cli_missing_backends_name_their_package():
    if tensorrt_status() is not None:
        r = run_cli("repvgg-bench", "--models", "repvgg-a0", "--backend", "trt")
        assert r.returncode == 2 and "tensorrt" in r.stderr.lower()
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        r = run_cli("repvgg-bench", "--models", "repvgg-a0", "--backend", "ort", "--device", "cuda")
        assert r.returncode == 2 and "onnxruntime-gpu" in r.stderr


# --------------------------------------------------------------------------------------------- TensorRT interface
def test_engine_profile_bounds_are_checked(tmp_path):
    t = TrtTarget(path=tmp_path / "a0.engine")
    t.profile = ([1, 3, 224, 224], [8, 3, 224, 224], [32, 3, 224, 224])
    with pytest.raises(UserError, match=r"batch 64 is outside the engine's profile \(batch 1..32\) of a0.engine"):
        t.case(64)
    t.case(32)
    assert _profile_from_json({"profile": {"min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [8, 3, 8, 8]}})[2][0] == 8
    assert _profile_from_json({"profiles": [{"input": {"min": [1], "opt": [2], "max": [4]}}]}) == ([1], [2], [4])
    assert _profile_from_json({"shapes": {"input": [[1], [2], [3]]}}) == ([1], [2], [3])
    assert _profile_from_json({"precision": "fp16"}) is None


def test_fraction_of_peak_uses_the_tf32_peak_where_fp32_ran_on_tf32(tmp_path, a0_files):
    from repvgg_deploy.bench.backends import engine_tf32, ort_tf32, read_engine_json
    from repvgg_deploy.build import BuildConfig
    from repvgg_deploy.build.metadata import EngineMeta, write_engine_meta

    peaks = {"fp32": 60.0, "tf32": 400.0, "fp16": 800.0}  # H100/H200-like: FP32 (TF32 off) vs TF32 vs FP16
    s = Settings(measured_peaks=peaks)

    def row(t):
        return Row(PlanItem(t, "m", "m"), 128, windows=[Window([0.01] * 10, [10.0] * 10, 0.1)], macs=10 ** 9)

    def trt_row(name, precision, build):
        # the JSON build_engine writes beside an engine, read back as TrtTarget.load() reads it
        path = tmp_path / f"{name}.engine"
        write_engine_meta(path, EngineMeta(
            engine=path.name, engine_bytes=2048, engine_sha256="0" * 64, engine_magic="00000000",
            tensorrt={"version": "10.13.0", "major": 10, "strongly_typed": True}, gpu=None, precision=precision,
            profile=None, io=[], onnx={"path": "a0.onnx", "sha256": "", "metadata": {"arch": "RepVGG-A0"}}, build=build))
        t = TrtTarget(path=path)
        t.meta = read_engine_json(path)
        t.precision, t.tf32 = t.meta["precision"], engine_tf32(t.meta)
        return row(t)

    def peak(r):
        r = row_record(r, s)
        return r["peak_tflops"], r["peak_source"]

    # TensorRT: FP32 engines are built with TF32 by default (BuildConfig.tf32, recorded as build.tf32)
    assert BuildConfig().tf32 is True
    assert peak(trt_row("fp32", "fp32", {"tf32": BuildConfig().tf32, "opt_level": 3})) == (400.0, "measured tf32 matmul")
    assert peak(trt_row("fp32-notf32", "fp32", {"tf32": False})) == (60.0, "measured fp32 matmul")
    assert peak(trt_row("fp16", "fp16", {"tf32": True})) == (800.0, "measured fp16 matmul")
    assert peak(trt_row("int8", "int8", {"tf32": True})) == (None, None)
    assert peak(trt_row("unknown", "fp32", {})) == (60.0, "measured fp32 matmul")  # not recorded: as before
    # ONNX Runtime: the CUDA provider's use_tf32 (on by default) as get_provider_options() reports it
    cpu = OrtTarget("cpu", 1, path=a0_files["fp32"])
    cpu.load()
    assert ort_tf32(cpu.runner.session.get_provider_options()) is None and cpu.tf32 is None  # no CUDA provider
    cpu.unload()
    assert ort_tf32({"CUDAExecutionProvider": {"device_id": "0", "use_tf32": "0"}}) is False
    assert ort_tf32({"CUDAExecutionProvider": {"device_id": "0"}}) is None  # an ONNX Runtime without the option
    cuda = OrtTarget("cuda", None, path=a0_files["fp32"])
    cuda.tf32 = ort_tf32({"CUDAExecutionProvider": {"device_id": "0", "use_tf32": "1"}})
    assert cuda.tf32 is True and peak(row(cuda)) == (400.0, "measured tf32 matmul")
    # PyTorch: the precision is the switch (TorchRunner.activate turns TF32 off for fp32, on for tf32)
    for precision, key in (("fp32", "fp32"), ("tf32", "tf32"), ("fp16", "fp16"), ("bf16", "bf16")):
        t = TorchTarget(resolve_model("repvgg-a0"), "cuda", precision, 32)
        assert peak(row(t)) == (peaks.get(key), f"measured {key} matmul" if key in peaks else None)


# --------------------------------------------------------------------------------------------- PyTorch backend
def test_torch_runner_cpu_precisions():
    from repvgg_deploy.backend.pyt import TorchRunner

    model = reparameterize(create_model("A0", num_classes=10).eval())
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    for precision, tol in (("fp32", 1e-5), ("bf16", 0.1)):
        r = TorchRunner(model, device="cpu", precision=precision, channels_last=True)
        xp = r.prepare(x)
        assert xp.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        assert xp.is_contiguous(memory_format=torch.channels_last) and not xp.is_contiguous()
        out = r(xp)
        assert out.dtype == xp.dtype
        assert {p.dtype for p in r.model.parameters()} == {xp.dtype}  # the model itself converted, not autocast
        y = out.float()
        assert y.shape == (2, 10)
        assert (y - ref).abs().max() <= tol * ref.abs().max() + 1e-6
    if not has_cuda:
        with pytest.raises(UserError, match="needs --device cuda"):
            TorchRunner(model, device="cpu", precision="fp16")


# --------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda, reason="needs a CUDA GPU")
def test_gpu_torch_fp16_channels_last_cuda_graphs(tmp_path):
    r = run_cli("repvgg-bench", "--models", "repvgg-a0,resnet18", "--backend", "torch", "--device", "cuda",
                "--precision", "fp16,fp32", "--channels-last", "--cuda-graphs", "--batch", "1,8", "--duration", "0.2",
                "--rounds", "2", "--measure-peak", "--no-progress", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc["peaks"]) == {"fp16", "fp32"} and doc["peaks"]["fp16"] > doc["peaks"]["fp32"] > 0
    for x in doc["results"]:
        assert x["status"] == "ok" and x["timing"] == "cuda-events" and x["options"] == "channels_last+cuda_graphs"
        assert 0 < x["gpu_ms_median"] <= x["latency_ms_median"] * 1.05
        assert 0 < x["peak_fraction"] < 1.5


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda, reason="needs a CUDA GPU")
def test_gpu_matmul_peak():
    from repvgg_deploy.bench.measure import measure_matmul_peak

    p16 = measure_matmul_peak("fp16", n=4096, seconds=0.2)
    p32 = measure_matmul_peak("fp32", n=4096, seconds=0.2)
    assert p16["tflops"] > p32["tflops"] > 0.1


def test_time_budget_stops_new_work():
    import time

    log = []
    plan = [PlanItem(_LoggingTarget(n, log), n, n, None, [1]) for n in "AB"]
    s = Settings(warmup_s=0, warmup_iters=1, duration_s=0.001, min_iters=1, rounds=2, deadline=time.perf_counter() - 1)
    rows = run_benchmark(plan, s, progress=False)
    assert log == [] and all(r.error == "not run: --time-budget reached" for r in rows)


def test_reference_flops_table_matches_fresh_counts(paper_protos):
    from repvgg_deploy.bench.flops import reference_macs

    assert reference_macs("repvgg-a0", 224) == count_macs(paper_protos["RepVGG-A0"]).macs
    assert reference_macs("resnet18", 224) == count_macs(paper_protos["ResNet-18"]).macs
    assert reference_macs("repvgg-a0", 64) is None and reference_macs("nonesuch", 224) is None
    from repvgg_deploy.bench.models import known_models

    missing = [k for k in known_models() if reference_macs(k, 224) is None]
    assert not missing, f"run tools/count_flops.py {' '.join(missing)}"


@pytest.mark.slow
def test_gpu_suite_dry_run_on_cpu(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_bench_suite.py"), str(tmp_path), "--dry-run"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "dry run" in summary and "ratio to ResNet-50 (paper)" in summary and "Throughput, images/s" in summary
    assert "onnxruntime-gpu" in summary or "ort-cuda" in summary
    for step in ("paper-table4", "torch-fp16"):
        doc = json.loads((tmp_path / step / "results.json").read_text())
        assert doc["results"] and all(x["status"] == "ok" for x in doc["results"]), step
        assert (tmp_path / step / "report.md").is_file() and (tmp_path / f"{step}.log").is_file()

"""The main job: a tiny real run end to end (and its reuse), and a machine without the data set."""
import json

import pytest

from repvgg_deploy.cli import pipeline as pipeline_cli
from repvgg_deploy.cli.common import run_main
from repvgg_deploy.data import sources

from conftest import has_fashion, run_cli


def test_missing_data_set_gives_commands_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sources, "FASHION_MNIST_DIRS", ())  # as on a machine without the Debian package
    out = tmp_path / "run"
    rc = run_main(pipeline_cli.main, "repvgg-pipeline", ["--out", str(out), "--data-dir", str(tmp_path / "empty")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "Fashion-MNIST not found" in err[0] and "apt-get install dataset-fashion-mnist" in err[0]
    assert "--download" in err[0]
    assert not out.exists()


def test_out_is_checked_and_fresh_deletes_only_a_pipeline_folder(tmp_path, monkeypatch, capsys):
    from repvgg_deploy.pipeline import MARKER, _check_out, _finished, _make_out, _saved_result

    def err(args):
        rc = run_main(pipeline_cli.main, "repvgg-pipeline", args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, lines
        return lines[0]

    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert "notes.txt is a file, not a folder" in err(["--out", str(a_file)])
    mine = tmp_path / "mine"
    (mine / "models").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    assert "--fresh would delete" in err(["--out", str(mine), "--fresh"]) and (mine / "thesis.tex").exists()
    (mine / "thesis.tex").unlink()
    (mine / "models" / "my_resnet.onnx").write_bytes(b"x")  # a user's folder that happens to be named models/
    assert "repvgg-pipeline did not make" in err(["--out", str(mine), "--fresh"])
    assert (mine / "models" / "my_resnet.onnx").exists()
    _make_out(mine)  # a run into a folder that was not empty: the pipeline does not claim it
    assert not (mine / MARKER).exists() and (mine / "train").is_dir()
    ours = tmp_path / "ours"
    _make_out(ours)  # the pipeline made this one: --fresh may delete it, with what the pipeline wrote
    assert (ours / MARKER).is_file()
    (ours / "report.md").write_text("# report")
    (ours / ".report.md.x1.tmp").write_text("cut short")
    _check_out(ours, fresh=True)
    monkeypatch.chdir(ours / "models")
    assert "holds the current folder" in err(["--out", str(ours), "--fresh"]) and (ours / "models").is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)  # even an empty folder: --fresh --out . would delete the current folder
    assert "holds the current folder" in err(["--out", ".", "--fresh"]) and empty.is_dir()
    monkeypatch.chdir(tmp_path)
    # a metrics line cut short by a kill, or a broken result file: not reused, no traceback
    run = tmp_path / "train"
    run.mkdir()
    (run / "best.pth").write_bytes(b"x")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, "lr"')
    assert not _finished(run, 2) and _finished(run, 1)  # the last line it can read is epoch 1's
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n[2]\n{"epoch": 1e999}\n{"epoch": 2}\n')  # bad lines between
    assert _finished(run, 2)
    (run / "metrics.jsonl").write_bytes(b'{"epoch": 2}\n\xff\xfe')  # a line that is not UTF-8 is skipped, as in training
    assert _finished(run, 2)
    (run / "metrics.jsonl").write_bytes(b'{"epoch": 1}\n{"epoch": 2, "x": "\xff"}\n')
    assert not _finished(run, 2) and _finished(run, 1)
    res = tmp_path / "a0-fp32.json"
    res.write_text('{"top1": 8')
    assert _saved_result(res, [run / "best.pth"], 10) is None


def test_schedules_are_real_repvgg_train_flags():
    from repvgg_deploy.cli.train import build_parser
    from repvgg_deploy.pipeline import FULL, SHORT, train_args
    from repvgg_deploy.train import TrainConfig

    parser = build_parser()
    for recipe in (SHORT, FULL):
        args = vars(parser.parse_args(["--arch", "A0", "--data", "fashion-mnist", *train_args(recipe)]))
        for key, value in recipe.items():  # every key reaches repvgg-train as the value the schedule names
            assert args[key] == (value if value is not None else TrainConfig.__dataclass_fields__[key].default), key
    assert train_args({"epochs": 3, "nesterov": True, "compile": False, "ema_decay": None}) == ["--epochs", "3", "--nesterov"]
    with pytest.raises(ValueError, match="no repvgg-train flag"):
        train_args({"epochs": 3, "optimizer": "adam"})


def test_full_schedule_drops_the_speed_options_this_cpu_cannot_use(monkeypatch, tmp_path):
    from repvgg_deploy.pipeline import for_this_machine
    from repvgg_deploy.utils.env import cpu_bf16_native

    recipe = {"epochs": 3, "amp": "bf16", "compile": True, "channels_last": True}
    assert for_this_machine(recipe, cuda=True) == (recipe, [])  # a GPU computes bf16 and compiles with nvcc/triton
    got, notes = for_this_machine(recipe, cuda=False)
    assert got["channels_last"] and got["epochs"] == 3
    assert (got["amp"] == "bf16") == cpu_bf16_native()
    assert any("native bf16" in n for n in notes) == (not cpu_bf16_native())
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without g++/c++/clang++
    monkeypatch.delenv("CXX", raising=False)
    got, notes = for_this_machine(recipe, cuda=False)
    assert got["compile"] is False and any("C++ compiler" in n for n in notes)
    assert recipe["compile"] is True  # the schedule itself is not changed


def test_lanes_split_the_cores_on_a_cpu():
    from repvgg_deploy.pipeline import lanes

    assert lanes(cuda=False, cores=2) == (2, 1)
    assert lanes(cuda=False, cores=16) == (2, 8)
    assert lanes(cuda=False, cores=1) == (1, None)
    assert lanes(cuda=True, cores=16) == (1, None)  # one GPU: one training at a time
    assert lanes(jobs=1, cuda=False, cores=2) == (1, None)  # --jobs 1: the old one-after-the-other
    assert lanes(jobs=3, cuda=False, cores=12) == (3, 4)
    assert lanes(threads=1, cuda=False, cores=2) == (2, 1)
    assert lanes(threads=2, cuda=False, cores=2) == (1, 2)  # --threads 2 on 2 cores: no room for a second lane
    assert lanes(threads=4, cuda=False, cores=16) == (2, 4)
    assert lanes(jobs=2, threads=2, cuda=False, cores=2) == (2, 2)  # --jobs is the user's to oversubscribe


def test_side_by_side_keeps_order_prefixes_output_and_reports_the_failure(capsys):
    import sys

    from repvgg_deploy.errors import UserError
    from repvgg_deploy.pipeline import _run_side_by_side

    slow = [sys.executable, "-c", "import time; time.sleep(0.5); print('slow done')"]
    fast = [sys.executable, "-c", "print('fast done')"]
    commands = []
    results = _run_side_by_side([("slow", slow), ("fast", fast)], commands, jobs=2, capture=True)
    assert [r.stdout.strip() for r in results] == ["slow done", "fast done"]  # the order asked for, not of finishing
    assert len(commands) == 2 and "time.sleep(0.5)" in commands[0] and "fast done" in commands[1]
    _run_side_by_side([("slow", slow), ("fast", fast)], [], jobs=2)
    out = capsys.readouterr().out
    assert "[slow] slow done" in out and "[fast] fast done" in out
    bad = [sys.executable, "-c", "import sys; sys.exit('no such file: x.pth')"]
    with pytest.raises(UserError, match=r"step failed \(exit 1\): .*sys.exit.*: no such file: x.pth"):
        _run_side_by_side([("fast", fast), ("bad", bad)], [], jobs=2, capture=True)


@pytest.mark.slow
@pytest.mark.skipif(not has_fashion, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_tiny_pipeline_end_to_end_and_reuse(tmp_path):
    out = tmp_path / "run"
    args = ["repvgg-pipeline", "--out", str(out), "--epochs", "1", "--subset", "256", "--eval-limit", "200",
            "--calib-images", "32", "--no-bench", "--threads", "1"]
    r = run_cli(*args, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[6/6] report" in r.stdout and "$ repvgg-train" in r.stdout and "$ repvgg-export" in r.stdout
    # on a CPU the two trainings run side by side, one thread each, their lines prefixed
    assert "[a0] " in r.stdout and "[qa-a0] " in r.stdout and "commands run 2 side by side, 1 thread each" in r.stdout
    report = json.loads((out / "report.json").read_text())
    for key in ("a0", "qa-a0"):
        for prec in ("pytorch", "fp32", "fp16", "int8"):
            res = report["accuracy"][f"{key}/{prec}"]
            assert res["n"] == 200 and 0 <= res["top1"] <= 100
        # fused FP32 ONNX predicts exactly what the training-form checkpoint predicts
        assert report["accuracy"][f"{key}/fp32"]["top1"] == report["accuracy"][f"{key}/pytorch"]["top1"]
        assert report["accuracy"][f"{key}/fp32"]["agreement"] == 1.0
        # FP16 and INT8 are compared with the FP32 ONNX's saved predictions, not by running it again
        for prec in ("fp16", "int8"):
            res = report["accuracy"][f"{key}/{prec}"]
            assert 0 <= res["agreement"] <= 1 and res["compare"]["top1"] == report["accuracy"][f"{key}/fp32"]["top1"]
    assert r.stdout.count("$ repvgg-eval") == 8  # each of the 8 artifacts once
    text = (out / "report.md").read_text()
    assert "ran 2 side by side, 1 thread each" in text
    assert "| RepVGG-A0 |" in text and "| QARepVGG-A0 |" in text and (out / "accuracy.png").stat().st_size > 0
    for name in ("a0", "a0-fp16", "a0-int8", "qa-a0", "qa-a0-fp16", "qa-a0-int8"):
        assert (out / "models" / f"{name}.onnx").exists()
    # no TensorRT here: the INT8 files get ONNX Runtime's Q/DQ placement, the one that runs on its int8 kernels
    int8 = json.loads((out / "models" / "a0-int8.json").read_text())
    assert int8["calibration"]["target"] == "onnxruntime" and int8["int8"]["problems"] == []
    assert "`--int8-target onnxruntime`" in text
    from repvgg_deploy.pipeline import _export_current

    ckpt = out / "train" / "a0" / "best.pth"
    assert _export_current(out / "models" / "a0-int8.onnx", ckpt, "int8", 32, "onnxruntime")
    assert not _export_current(out / "models" / "a0-int8.onnx", ckpt, "int8", 32, "tensorrt")
    # a second run reuses the checkpoints, ONNX files and evaluations
    r2 = run_cli(*args, timeout=900)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "$ repvgg-train" not in r2.stdout and "$ repvgg-export" not in r2.stdout and "$ repvgg-eval" not in r2.stdout
    assert r2.stdout.count("reusing") >= 8
    # other settings are not reused: another --eval-limit re-evaluates, other --calib-images re-exports
    # the INT8 files, and a schedule or --subset that the run in train/ did not use would train again
    r3 = run_cli("repvgg-pipeline", "--out", str(out), "--epochs", "1", "--subset", "256", "--eval-limit", "100",
                 "--calib-images", "16", "--no-bench", "--threads", "1", timeout=900)
    assert r3.returncode == 0, r3.stdout[-3000:] + r3.stderr[-3000:]
    assert "$ repvgg-train" not in r3.stdout and r3.stdout.count("$ repvgg-eval") == 8
    exports = [ln for ln in r3.stdout.splitlines() if ln.startswith("$ repvgg-export")]
    assert len(exports) == 2 and all("--precision int8" in ln and "--calib-images 16" in ln for ln in exports)
    report = json.loads((out / "report.json").read_text())
    assert {res["n"] for res in report["accuracy"].values()} == {100}
    from repvgg_deploy.pipeline import FULL, SHORT, _settings_changed

    assert _settings_changed(out / "train" / "a0", {**SHORT, "epochs": 1}, 256) == []
    changed = _settings_changed(out / "train" / "a0", FULL, None)
    assert "epochs 1 -> 50" in changed and "subset 256 -> None" in changed and "img_size None -> 64" in changed


def test_a_run_of_the_same_recipe_is_not_a_change(tmp_path):
    # the trainer records a flag left out by its default: FULL without bf16 (a CPU with no native bf16)
    # records amp "none", which is the recipe's amp None, not another setting (it was trained again)
    from repvgg_deploy.cli.train import build_parser
    from repvgg_deploy.pipeline import FULL, SHORT, _settings_changed, train_args
    from repvgg_deploy.train.recipe import TrainConfig

    for recipe in ({**FULL, "amp": None}, FULL, SHORT):
        args = vars(build_parser().parse_args(["--arch", "A0", "--data", "fashion-mnist", "--out", "x",
                                               *train_args(recipe)]))
        (tmp_path / "config.json").write_text(json.dumps({"config": TrainConfig(**args).to_dict()}))
        assert _settings_changed(tmp_path, recipe, None) == [], recipe
    assert _settings_changed(tmp_path, {**SHORT, "lr": 0.1}, None) == ["lr 0.05 -> 0.1"]

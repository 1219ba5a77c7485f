"""repvgg-train / repvgg-eval: recipe pieces, exact resume, Ctrl-C, DDP, train -> export -> eval, bad input."""
import json
import math
import os
import platform
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from repvgg_deploy import create_model, export_onnx, load_checkpoint
from repvgg_deploy.cli import eval as eval_cli
from repvgg_deploy.cli import train as train_cli
from repvgg_deploy.export import get_metadata
from repvgg_deploy.train import (ModelEMA, TrainConfig, capture_rng, evaluate_checkpoint, evaluate_onnx, lr_at,
                                 param_groups, restore_rng, split_decay, warmup_steps_for)

from conftest import FASHION_DIR, ROOT, has_cuda, has_fashion, run_cli
from test_data import make_image_folder

needs_fashion = pytest.mark.skipif(not has_fashion, reason=f"Fashion-MNIST not installed at {FASHION_DIR} "
                                                          "(apt-get install dataset-fashion-mnist)")

# One small run, shared: 512 images, 8 steps per epoch, 2 epochs, EMA on.
RUN = ["--arch", "A0", "--data", "fashion-mnist", "--epochs", "2", "--subset", "512", "--val-subset", "128",
       "--batch-size", "64", "--ema-decay", "0.99", "--seed", "1", "--workers", "0", "--log-every", "1"]


@pytest.fixture(autouse=True)
def _one_thread_per_process(monkeypatch):
    """The CLIs run as subprocesses beside other tests on few cores: OpenMP threads that spin-wait
    against each other slow everything down many times over, so each process gets one."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # must work: no pickled objects


def _same_state(a, b):
    assert a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run every resume is compared with."""
    if not has_fashion:
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_DIR}")
    out = tmp_path_factory.mktemp("ref") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        r = run_cli("repvgg-train", *RUN, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, r


# ------------------------------------------------------------------ recipe pieces (no data)


def test_param_groups_follow_the_official_rule():
    decay, no_decay = split_decay(create_model("A0", num_classes=10))
    assert "stage1.0.rbr_dense.conv.weight" in decay and "stage1.0.rbr_1x1.conv.weight" in decay
    assert "linear.weight" in decay and "stage0.rbr_dense.conv.weight" in decay
    for name in ("stage1.0.rbr_dense.bn.weight", "stage1.0.rbr_dense.bn.bias", "stage1.0.rbr_1x1.bn.weight",
                 "stage1.1.rbr_identity.weight", "stage1.1.rbr_identity.bias", "linear.bias"):
        assert name in no_decay, name
    assert not any("bn" in n or "bias" in n or "rbr_identity" in n for n in decay)
    assert all(n.endswith(".weight") and ("conv" in n or n == "linear.weight") for n in decay)
    qa_decay, qa_no = split_decay(create_model("QA-A0", num_classes=10))
    assert "stage1.1.bn.weight" in qa_no and "stage1.1.bn.bias" in qa_no  # the post-add BN
    assert "stage1.1.rbr_1x1.weight" in qa_decay and "stage1.1.rbr_dense.bn.weight" in qa_no
    model = create_model("A0", num_classes=10)
    groups = param_groups(model, 1e-4)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_linear_scaling_rule_and_metrics_truncation(tmp_path):
    from repvgg_deploy.train.loop import _truncate_metrics
    from repvgg_deploy.train.recipe import scaled_lr

    assert scaled_lr(0.1, 256) == 0.1 and scaled_lr(0.1, 512) == pytest.approx(0.2)
    assert scaled_lr(0.1, 128) == pytest.approx(0.05) and scaled_lr(0.1, 512, scale=False) == 0.1
    # --resume from epoch 2: the lines of later epochs, one that is not UTF-8, and one cut short by a kill, go
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(("".join(json.dumps({"epoch": e, "val_top1": e * 10.0}) + "\n" for e in (1, 2, 3))).encode()
                     + b'{"epoch": 1, "note": "\xff"}\n{"epoch": 4, "val')
    _truncate_metrics(path, 2)
    assert [json.loads(ln) for ln in path.read_text().splitlines()] == [{"epoch": 1, "val_top1": 10.0},
                                                                         {"epoch": 2, "val_top1": 20.0}]
    assert path.read_text().endswith("\n")


def test_lr_schedule_warmup_then_cosine():
    total, warm, peak = 1000, 100, 0.4
    lrs = [lr_at(s, total, warm, peak, min_lr=0.001) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / warm) and lrs[warm - 1] == pytest.approx(peak)
    assert all(b > a for a, b in zip(lrs[:warm - 1], lrs[1:warm]))  # linear rise
    assert all(np.diff(lrs[warm:]) < 0)  # then strictly decreasing
    assert lrs[warm] == pytest.approx(peak)
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx((peak + 0.001) / 2, rel=1e-6)
    assert lrs[-1] == pytest.approx(0.001 + (peak - 0.001) * 0.5 * (1 + math.cos(math.pi * 899 / 900)))
    assert lr_at(5, 10, 0, 1.0) == pytest.approx(0.5)  # no warm-up
    cfg = TrainConfig(arch="A0", data="fake", out="x")
    assert warmup_steps_for(cfg, 100) == 500  # 5 epochs of the 120-epoch default
    cfg.epochs = 10
    assert warmup_steps_for(cfg, 100) == 100  # a tenth of a short schedule
    cfg.warmup_epochs, cfg.warmup_steps = 2.5, None
    assert warmup_steps_for(cfg, 100) == 250
    cfg.warmup_steps = 7
    assert warmup_steps_for(cfg, 100) == 7


def test_ema_averages_weights_and_buffers():
    torch.manual_seed(0)
    model = create_model("A0", num_classes=10, in_chans=1)
    ema = ModelEMA(model, 0.9)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.stage0.rbr_dense.bn.running_mean.add_(2.0)
        model.stage0.rbr_dense.bn.num_batches_tracked.fill_(7)
    ema.update(model)
    sd = ema.state_dict()
    assert torch.allclose(sd["linear.weight"], before["linear.weight"] + 0.1, atol=1e-6)
    assert torch.allclose(sd["stage0.rbr_dense.bn.running_mean"], before["stage0.rbr_dense.bn.running_mean"] + 0.2)
    assert int(sd["stage0.rbr_dense.bn.num_batches_tracked"]) == 7
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_ema_recalibrated_bn_is_the_batch_statistics():
    """The EMA copy that is evaluated gets BN statistics computed from data; the EMA is untouched."""
    torch.manual_seed(0)
    model = create_model("A0", num_classes=10, in_chans=1)
    ema = ModelEMA(model, 0.9)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    batches = [(torch.randn(8, 1, 32, 32) * 3 + 1, torch.zeros(8, dtype=torch.long)) for _ in range(3)]
    recal = ema.recalibrated(iter(batches + [(torch.full((8, 1, 32, 32), 1e3), None)]), 3)  # 4th batch unused
    assert _same_state(ema.state_dict(), before) and not recal.training
    bn, conv = recal.stage0.rbr_dense.bn, recal.stage0.rbr_dense.conv
    with torch.no_grad():
        y = torch.cat([conv(x) for x, _ in batches])  # 3 equal batches: mean of means = overall mean
    assert torch.allclose(bn.running_mean, y.mean((0, 2, 3)), atol=1e-4)
    per_batch_var = torch.stack([conv(x).detach().var((0, 2, 3), unbiased=True) for x, _ in batches]).mean(0)
    assert torch.allclose(bn.running_var, per_batch_var, rtol=1e-4)
    assert not torch.allclose(bn.running_var, before["stage0.rbr_dense.bn.running_var"])
    with pytest.raises(ValueError):
        ema.recalibrated(iter(batches), 0)


def test_rng_state_survives_weights_only_save(tmp_path):
    import random

    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    torch.save({"rng": capture_rng()}, tmp_path / "r.pth")
    expected = (torch.rand(3), random.random(), np.random.rand())
    restore_rng(_load(tmp_path / "r.pth")["rng"])
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def test_batch_mixer_mixup_and_cutmix_by_hand():
    from repvgg_deploy.train import BatchMixer

    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 2, 3, 4, 5])
    off = BatchMixer(10)
    assert not off.enabled and off(x, y) == (x, y) and repr(off) == "off"
    assert not BatchMixer(10, mixup=0.2, prob=0.0).enabled
    # MixUp: image i blended with image i-1, the target the same blend of their one-hot labels
    xm, t = BatchMixer(10, mixup=0.4)(x, y)
    lam = float(t[0, 0])
    assert 0 < lam < 1 and torch.allclose(t.sum(1), torch.ones(6))
    assert torch.allclose(t[torch.arange(6), y], torch.full((6,), lam))
    assert torch.allclose(t[torch.arange(6), y.roll(1)], torch.full((6,), 1 - lam))
    assert torch.allclose(xm, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6)
    # CutMix: every pixel is image i's or image i-1's, and the target weight is the area kept
    xc, t = BatchMixer(10, cutmix=1.0)(x, y)
    own = (xc == x).all(1)  # (B, H, W)
    assert ((xc == x) | (xc == x.roll(1, 0))).all()
    assert torch.allclose(t[torch.arange(6), y], own.float().mean((1, 2)))
    # both on: switch_prob picks CutMix (1) or MixUp (0); prob 0.5 mixes some batches, not all
    for switch, is_cut in ((1.0, True), (0.0, False)):
        xo, _ = BatchMixer(10, mixup=0.4, cutmix=1.0, switch_prob=switch)(x, y)
        assert bool(((xo == x) | (xo == x.roll(1, 0))).all()) == is_cut
    half = BatchMixer(10, mixup=0.4, prob=0.5)
    mixed = [half(x, y)[1].ndim == 2 for _ in range(40)]
    assert 5 < sum(mixed) < 35
    # seeded: the same draws again
    torch.manual_seed(7)
    a = BatchMixer(10, mixup=0.4, cutmix=1.0)(x, y)
    torch.manual_seed(7)
    b = BatchMixer(10, mixup=0.4, cutmix=1.0)(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError):
        BatchMixer(10, mixup=-1)


# ------------------------------------------------------------------ runs


@needs_fashion
def test_run_writes_loadable_checkpoints_and_metrics(reference_run):
    out, r = reference_run
    assert "epoch 1/2 step 1/8" in r.stdout  # plain progress lines without a terminal
    assert f"best top-1" in r.stdout and str(out / "best.pth") in r.stdout
    last, best = _load(out / "last.pth"), _load(out / "best.pth")
    for ck in (last, best):
        assert ck["format"] == "repvgg-deploy" and ck["arch"] == "RepVGG-A0" and ck["num_classes"] == 10
        assert ck["in_chans"] == 1 and ck["img_size"] == 32 and ck["dataset"] == "fashion-mnist"
        assert ck["mean"] == [0.286] and ck["std"] == [0.353] and ck["class_names"][9] == "Ankle boot"
    assert last["epoch"] == 2 and last["step_in_epoch"] == 0 and last["global_step"] == 16
    assert {"optimizer", "model_ema", "rng", "schedule", "best_top1", "config"} <= set(last)
    # best.pth is the EMA model with its BN statistics recomputed (--ema-bn-batches 20): the
    # EMA's weights, other running statistics
    assert best["ema"] is True and best["config"]["ema_bn_batches"] == 20
    weights = [k for k in best["model"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    if best["epoch"] == 2:
        assert all(torch.equal(best["model"][k], last["model_ema"][k]) for k in weights)
        assert not torch.equal(best["model"]["stage0.rbr_dense.bn.running_var"],
                               last["model_ema"]["stage0.rbr_dense.bn.running_var"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for key in ("lr", "train_loss", "train_acc", "val_top1", "val_top5", "images_per_s", "seconds"):
        assert all(isinstance(m[key], float) for m in lines), key
    assert max(m["val_top1"] for m in lines) == pytest.approx(last["best_top1"])
    model = load_checkpoint(out / "best.pth")
    assert model.pretrained_cfg["img_size"] == 32 and model.pretrained_cfg["class_names"][0] == "T-shirt/top"


@needs_fashion
@pytest.mark.slow
def test_resume_after_stop_reaches_the_same_weights(reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "run"
    r1 = run_cli("repvgg-train", *RUN, "--out", str(out), "--stop-after", "1")
    assert r1.returncode == 0, r1.stderr
    assert "--resume" in r1.stdout and _load(out / "last.pth")["epoch"] == 1
    r2 = run_cli("repvgg-train", *RUN, "--out", str(out), "--resume")
    assert r2.returncode == 0, r2.stderr
    assert "resuming from" in r2.stdout
    a, b = _load(ref / "last.pth"), _load(out / "last.pth")
    assert _same_state(a["model"], b["model"]) and _same_state(a["model_ema"], b["model_ema"])
    for k, s in a["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    ref_metrics = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("epoch", "lr", "train_loss", "train_acc", "val_top1", "val_top5"):
        assert [m[key] for m in metrics] == [m[key] for m in ref_metrics], key
    # a finished run resumed again has nothing to do
    r3 = run_cli("repvgg-train", *RUN, "--out", str(out), "--resume")
    assert r3.returncode == 0 and "nothing to do" in r3.stdout


@needs_fashion
@pytest.mark.slow
def test_mixup_cutmix_run_resumes_to_the_same_weights(tmp_path):
    mix = [*RUN, "--mixup", "0.2", "--cutmix", "1.0", "--subset", "256", "--reprob", "0.25"]
    ref, out = tmp_path / "ref", tmp_path / "run"
    r = run_cli("repvgg-train", *mix, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    assert "seed 1, random erasing 0.25, mixup 0.2 + cutmix 1 (p 1, cutmix share 0.5)" in r.stdout
    assert run_cli("repvgg-train", *mix, "--out", str(out), "--stop-after", "1").returncode == 0
    assert run_cli("repvgg-train", *mix, "--out", str(out), "--resume").returncode == 0
    a, b = _load(ref / "last.pth"), _load(out / "last.pth")
    assert a["config"]["mixup"] == 0.2 and a["config"]["cutmix"] == 1.0
    assert _same_state(a["model"], b["model"]) and _same_state(a["model_ema"], b["model_ema"])
    assert a["global_step"] == 8  # 256 images / 64 x 2 epochs
    # the mixing is really applied: the same run without it ends at other weights
    base = tmp_path / "plain"
    assert run_cli("repvgg-train", *RUN, "--subset", "256", "--reprob", "0.25", "--out", str(base)).returncode == 0
    assert not _same_state(_load(base / "last.pth")["model"], a["model"])


@needs_fashion
@pytest.mark.slow
def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "repvgg_deploy.cli.train", *RUN, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if "epoch 1/2 step 3/8" in line:
                proc.send_signal(signal.SIGINT)
                break
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "SIGINT" in stderr and "resume with:" in stderr
    resume_cmd = stderr.strip().splitlines()[-1].strip()
    assert resume_cmd.startswith("repvgg-train --arch A0") and resume_cmd.endswith("--resume")
    saved = _load(out / "last.pth")
    assert saved["epoch"] == 0 and 3 <= saved["step_in_epoch"] <= 8, (saved["epoch"], saved["step_in_epoch"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    r = run_cli("repvgg-train", *RUN, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    a, b = _load(ref / "last.pth"), _load(out / "last.pth")
    assert _same_state(a["model"], b["model"]) and _same_state(a["model_ema"], b["model_ema"])
    ref_metrics = (ref / "metrics.jsonl").read_text().splitlines()
    metrics = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [json.loads(m)["epoch"] for m in ref_metrics] == [1, 2]
    for m, rm in zip(metrics, ref_metrics):
        m, rm = json.loads(m), json.loads(rm)
        assert (m["train_loss"], m["train_acc"], m["val_top1"]) == (rm["train_loss"], rm["train_acc"], rm["val_top1"])


@needs_fashion
@pytest.mark.slow
def test_train_export_eval_give_the_same_top1(reference_run, tmp_path, capsys):
    ref, _ = reference_run
    ckpt, onnx_path = ref / "best.pth", tmp_path / "a0.onnx"
    r = run_cli("repvgg-export", str(ckpt), "-o", str(onnx_path))
    assert r.returncode == 0, r.stderr
    meta = get_metadata(onnx.load(str(onnx_path)))
    assert meta["img_size"] == 32 and meta["in_chans"] == 1 and meta["mean"] == [0.286]
    assert meta["dataset"] == "fashion-mnist" and meta["class_names"][9] == "Ankle boot"
    rc = run_cli("repvgg-eval", str(ckpt), "--arch", "A0", "--data", "fashion-mnist", "--limit", "600", "--json")
    ro = run_cli("repvgg-eval", str(onnx_path), "--data", "fashion-mnist", "--limit", "600", "--json")
    assert rc.returncode == 0 and ro.returncode == 0, rc.stderr + ro.stderr
    jc, jo = json.loads(rc.stdout), json.loads(ro.stdout)
    assert jc["n"] == jo["n"] == 600 and jc["format"] == "checkpoint" and jo["format"] == "onnx"
    assert jc["top1"] == jo["top1"] and jc["top5"] == jo["top5"]
    assert 0 <= jc["top1"] <= 100 and jc["top1"] <= jc["top5"]
    # agreement of the training-form checkpoint and the fused ONNX, on more images, in one call
    rcmp = run_cli("repvgg-eval", str(ckpt), "--limit", "2000", "--compare-with", str(onnx_path),
                   "--min-agreement", "0.999")
    assert rcmp.returncode == 0, rcmp.stdout + rcmp.stderr
    assert "prediction agreement" in rcmp.stdout
    # the library functions give the same numbers
    lc = evaluate_checkpoint(ckpt, limit=600, fuse=True)
    lo = evaluate_onnx(onnx_path, limit=600)
    assert lc["top1"] == lo["top1"] == jc["top1"] and lc["n"] == 600
    # --save-predictions once, then --compare-with that file gives what comparing with the model gives
    preds = tmp_path / "onnx.predictions.json"
    capsys.readouterr()
    assert eval_cli.cli([str(onnx_path), "--limit", "600", "--save-predictions", str(preds), "--json"]) == 0
    saved_run = json.loads(capsys.readouterr().out)
    assert "predictions" not in saved_run and saved_run["top1"] == jo["top1"]
    doc = json.loads(preds.read_text())
    assert doc["n"] == 600 and len(doc["predictions"]) == 600 and doc["top1"] == jo["top1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"
    results = []
    for other in (onnx_path, preds):
        assert eval_cli.cli([str(ckpt), "--limit", "600", "--compare-with", str(other), "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["agreement"] == results[1]["agreement"] and results[0]["agreement"] >= 0.999
    assert results[0]["compare"]["top1"] == results[1]["compare"]["top1"] == jo["top1"]
    assert results[1]["compare"]["read_from"] == str(preds) and "read_from" not in results[0]["compare"]
    # a saved file of other images, or a file that is not one, is a one-line error
    _one_line_error(capsys, eval_cli.cli([str(ckpt), "--limit", "300", "--compare-with", str(preds)]),
                    "saw 600 images", "repvgg-eval")
    (tmp_path / "other.json").write_text('{"top1": 1}')
    _one_line_error(capsys, eval_cli.cli([str(ckpt), "--limit", "300", "--compare-with", str(tmp_path / "other.json")]),
                    "not a predictions file", "repvgg-eval")
    _one_line_error(capsys, eval_cli.cli([str(onnx_path), "--compare-with", str(preds), "--save-predictions", str(preds)]),
                    "name the same file", "repvgg-eval")
    _one_line_error(capsys, eval_cli.cli([str(onnx_path), "--save-predictions", str(tmp_path / "no" / "p.json")]),
                    "output folder does not exist", "repvgg-eval")
    # a bad --compare-with fails before the evaluation: nothing is saved
    fresh = tmp_path / "fresh.predictions.json"
    for missing in ("missing.json", "missing.onnx"):
        _one_line_error(capsys, eval_cli.cli([str(onnx_path), "--save-predictions", str(fresh),
                                              "--compare-with", str(tmp_path / missing)]), "not found", "repvgg-eval")
    (tmp_path / "cut.onnx").write_bytes(onnx_path.read_bytes()[:5000])  # a file cut short: found at its load
    _one_line_error(capsys, eval_cli.cli([str(onnx_path), "--limit", "300", "--save-predictions", str(fresh),
                                          "--compare-with", str(tmp_path / "cut.onnx")]),
                    "not a readable ONNX file", "repvgg-eval")
    preds_before = preds.read_bytes()  # a comparison of other images: the error, and nothing saved
    _one_line_error(capsys, eval_cli.cli([str(ckpt), "--limit", "300", "--compare-with", str(preds),
                                          "--save-predictions", str(fresh)]), "saw 600 images", "repvgg-eval")
    assert not fresh.exists() and preds.read_bytes() == preds_before
    _one_line_error(capsys, eval_cli.cli([str(onnx_path), "--save-predictions", str(tmp_path)]),
                    "output is a folder, not a file", "repvgg-eval")
    _one_line_error(capsys, eval_cli.cli([str(onnx_path), "--img-size", "64"]),
                    "takes 32x32 inputs, not 64x64", "repvgg-eval")


@needs_fashion
def test_eval_recomputes_bn_of_ema_weights(reference_run, tmp_path, capsys):
    ref, _ = reference_run
    last = ref / "last.pth"
    before = (last.stat().st_mtime_ns, _load(last)["model_ema"]["stage1.0.rbr_dense.bn.running_var"])
    plain = evaluate_checkpoint(last, use_ema=True, limit=300)
    recal = evaluate_checkpoint(last, use_ema=True, limit=300, recalibrate_bn=4, batch_size=64)
    assert plain["bn_recalibrated_batches"] == 0 and recal["bn_recalibrated_batches"] == 4
    assert recal["n"] == plain["n"] == 300 and recal["loss"] != plain["loss"]
    assert last.stat().st_mtime_ns == before[0]
    assert torch.equal(_load(last)["model_ema"]["stage1.0.rbr_dense.bn.running_var"], before[1])
    _one_line_error(capsys, eval_cli.cli([str(tmp_path / "m.onnx"), "--recalibrate-bn", "4"]),
                    "an ONNX file has no BatchNorm left", "repvgg-eval")
    # the recalibration batches are augmented like the run's: its random erasing is read back
    from repvgg_deploy.train.evaluate import _checkpoint_meta

    assert _checkpoint_meta(last)["reprob"] == 0.0
    ck = _load(last)
    ck["config"]["reprob"] = 0.5
    torch.save(ck, tmp_path / "re.pth")
    assert _checkpoint_meta(tmp_path / "re.pth")["reprob"] == 0.5
    erased = evaluate_checkpoint(tmp_path / "re.pth", use_ema=True, limit=300, recalibrate_bn=4, batch_size=64)
    assert erased["loss"] != recal["loss"]


@needs_fashion
@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    # its own session, so that a timeout ends the workers too, not only torchrun
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "repvgg_deploy.train", "--arch", "A0", "--data", "fashion-mnist", "--subset", "256",
                             "--val-subset", "128", "--epochs", "1", "--batch-size", "64", "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s:\n{stdout}\n{stderr}")
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("epoch 1/1:") == 1  # only rank 0 prints
    assert "2 process(es)" in r.stdout and "(2 x 32)" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["best.pth", "config.json", "last.pth", "metrics.jsonl"]
    last = _load(out / "last.pth")
    assert last["world_size"] == 2 and last["global_step"] == 4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    model = load_checkpoint(out / "best.pth")
    proto = export_onnx(model, tmp_path / "ddp.onnx", img_size=32)
    assert get_metadata(proto)["arch"] == "RepVGG-A0"
    from repvgg_deploy.backend.onnxrt import OnnxrtRunner

    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(OnnxrtRunner(tmp_path / "ddp.onnx")(x.numpy()) - ref).max() < 1e-4 * np.abs(ref).max()


@pytest.mark.slow
def test_image_folder_run_skips_a_corrupt_image(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=4, size=36)
    (root / "val" / "dog" / "zz-truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    out = tmp_path / "run"
    r = run_cli("repvgg-train", "--arch", "A0", "--data", str(root), "--img-size", "32", "--epochs", "1",
                "--batch-size", "3", "--workers", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "broken.png" in r.stderr and "skipped 2 unreadable" in r.stderr
    m = json.loads((out / "metrics.jsonl").read_text())
    assert m["skipped_images"] == 2 and m["val_n"] == 8
    ck = _load(out / "best.pth")
    assert ck["class_names"] == ["cat", "dog"] and ck["dataset"] == str(root.resolve()) and ck["img_size"] == 32
    e = run_cli("repvgg-eval", str(out / "best.pth"), "--json")  # the data set comes from the checkpoint
    assert e.returncode == 0, e.stderr
    res = json.loads(e.stdout)
    assert res["n"] == 8 and res["skipped"] == 1


def test_in_process_qa_bf16_channels_last_run(tmp_path, capsys):
    from repvgg_deploy.train import train
    from repvgg_deploy.utils.env import cpu_bf16_native

    out = tmp_path / "qa"
    cfg = TrainConfig(arch="QA-A0", data="fake", out=str(out), epochs=1, batch_size=32, subset=64, val_subset=32,
                      amp="bf16", channels_last=True, device="cpu", warmup_steps=1)
    result = train(cfg)
    assert result["exit_code"] == 0 and result["status"] == "done" and result["best_path"] == str(out / "best.pth")
    model = load_checkpoint(out / "best.pth")
    assert model.arch == "QARepVGG-A0" and model.in_chans == 3 and model.pretrained_cfg["img_size"] == 32
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((out / "config.json").read_text())["warmup_steps"] == 1
    # bf16 autocast is emulated on a CPU without AVX512-BF16/AMX: the run says so, and only then
    assert ("no native bf16" in capsys.readouterr().err) == (not cpu_bf16_native())


def test_cpu_bf16_native_reads_the_cpu_flags():
    from repvgg_deploy.utils.env import cpu_bf16_native, cpu_flags

    assert not cpu_bf16_native({"avx2", "fma", "avx512f", "avx512_vnni"})  # AVX-512 without its BF16 extension
    assert cpu_bf16_native({"avx2", "avx512f", "avx512_bf16"})
    assert cpu_bf16_native({"amx_tile", "amx_bf16"})
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert "sse2" in cpu_flags()  # every x86-64 CPU has it: the flags were really read


# ------------------------------------------------------------------ bad input: one line, exit 2


def _one_line_error(capsys, code, expected, prog):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"{prog}: error:") and "\n" not in err and "Traceback" not in err, err
    assert expected in err, err


def test_bad_training_input(tmp_path, capsys, monkeypatch):
    base = ["--arch", "A0", "--epochs", "1", "--out", str(tmp_path / "run")]
    _one_line_error(capsys, train_cli.cli(base + ["--data", "imagenet-1k"]), "unknown data set 'imagenet-1k'", "repvgg-train")
    (tmp_path / "notrain" / "val").mkdir(parents=True)
    _one_line_error(capsys, train_cli.cli(base + ["--data", str(tmp_path / "notrain")]), "has no train/ folder",
                    "repvgg-train")
    _one_line_error(capsys, train_cli.cli(base + ["--data", "fake", "--resume"]), "--resume: no checkpoint at",
                    "repvgg-train")
    _one_line_error(capsys, train_cli.cli(base + ["--data", "fake", "--arch", "Z9"]), "unknown arch", "repvgg-train")
    _one_line_error(capsys, train_cli.cli(base + ["--data", "fake", "--batch-size", "4096"]), "fewer than one batch",
                    "repvgg-train")
    _one_line_error(capsys, train_cli.cli(base + ["--data", "fake", "--amp", "fp16", "--device", "cpu"]),
                    "--amp fp16 needs a GPU", "repvgg-train")
    with monkeypatch.context() as m:  # TorchInductor's CPU kernels need a C++ compiler: say so before training
        m.setenv("CXX", str(tmp_path / "no-such-c++"))
        _one_line_error(capsys, train_cli.cli(base + ["--data", "fake", "--compile", "--device", "cpu"]),
                        "--compile on the CPU needs a C++ compiler", "repvgg-train")
    if not has_cuda:
        _one_line_error(capsys, train_cli.cli(base + ["--data", "fake", "--device", "cuda"]), "no CUDA device",
                        "repvgg-train")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    _one_line_error(capsys, train_cli.cli(base[:-1] + [str(a_file / "run"), "--data", "fake"]),
                    "notes.txt is a file, not a folder", "repvgg-train")
    assert not (tmp_path / "run" / "last.pth").exists()


def test_device_names():
    from repvgg_deploy.errors import MissingDependency, UserError
    from repvgg_deploy.train.distributed import pick_device

    assert pick_device("CPU") == torch.device("cpu")
    for bad in ("cuda:x", "cuda0", "gpu", "cuda:", "cuda:\u00b2", "cuda:1 "):
        with pytest.raises(UserError, match=r"unknown --device .*\(cpu, cuda, cuda:N or auto\)"):
            pick_device(bad)
    if has_cuda:
        assert pick_device("cuda", local_rank=0) == torch.device("cuda", 0) == pick_device("cuda:0")
        with pytest.raises(UserError, match="CUDA device"):
            pick_device(f"cuda:{torch.cuda.device_count()}")
    else:
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(MissingDependency, match="--device cuda:1: no CUDA device"):
            pick_device("cuda:1")


def test_bad_input_exits_2_through_the_console_script(tmp_path):
    r = run_cli("repvgg-train", "--arch", "A0", "--data", "nope", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown data set 'nope'" in r.stderr


@needs_fashion
def test_bad_resume_and_eval_input(reference_run, tmp_path, capsys):
    ref, _ = reference_run
    before = (ref / "last.pth").stat().st_mtime_ns
    args = list(RUN)
    args[args.index("A0")] = "B0"
    _one_line_error(capsys, train_cli.cli(args + ["--out", str(ref), "--resume"]),
                    "is a RepVGG-A0 run, not RepVGG-B0", "repvgg-train")
    _one_line_error(capsys, train_cli.cli(RUN + ["--out", str(ref)]), "already holds a run", "repvgg-train")
    assert (ref / "last.pth").stat().st_mtime_ns == before  # nothing was written
    _one_line_error(capsys, eval_cli.cli([str(ref / "best.pth"), "--arch", "B0", "--limit", "10"]),
                    "holds a RepVGG-A0 checkpoint, not RepVGG-B0", "repvgg-eval")
    _one_line_error(capsys, eval_cli.cli([str(tmp_path / "none.pth")]), "checkpoint not found", "repvgg-eval")
    _one_line_error(capsys, eval_cli.cli([str(tmp_path / "none.onnx")]), "ONNX file not found", "repvgg-eval")
    root = make_image_folder(tmp_path / "imgs", corrupt=False, per_class=1)
    _one_line_error(capsys, eval_cli.cli([str(ref / "best.pth"), "--data", str(root)]),
                    "has 10 classes but", "repvgg-eval")
    _one_line_error(capsys, eval_cli.cli([str(ref / "best.pth"), "--data", "cifar10", "--data-dir", str(tmp_path)]),
                    "CIFAR-10", "repvgg-eval")


@needs_fashion
@pytest.mark.slow
def test_resume_with_another_batch_size_goes_on_with_the_schedule(tmp_path):
    # 1 epoch of 8 steps at batch 64, then epoch 2 at batch 128 (4 steps): the schedule goes on from
    # step 1 x 4 of the new 8 (the old step count, 8, put all of epoch 2 at the end of the cosine, lr 0)
    out = tmp_path / "run"
    assert run_cli("repvgg-train", *RUN, "--out", str(out), "--stop-after", "1").returncode == 0
    r = run_cli("repvgg-train", *RUN, "--batch-size", "128", "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert "batch_size: 64 -> 128" in r.stdout + r.stderr
    assert _load(out / "last.pth")["global_step"] == 8
    lrs = [json.loads(x)["lr"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    peak = 0.1 * 128 / 256
    assert len(lrs) == 2 and lrs[1] == pytest.approx(lr_at(7, 8, 1, peak))  # the new schedule's last step
    assert lrs[1] > 0


def test_resume_of_another_arch_names_the_flag_that_resumes_it(tmp_path):
    from repvgg_deploy.errors import CheckpointError
    from repvgg_deploy.train.distributed import DistEnv
    from repvgg_deploy.train.loop import _check_resume

    cfg = TrainConfig(arch="A0", data="fake", out=str(tmp_path))
    for saved, flag in (("QARepVGG-A0", "QA-A0"), ("RepVGG-B1g4", "B1g4")):
        with pytest.raises(CheckpointError, match=f"resume with --arch {flag} or"):
            _check_resume({"arch": saved}, cfg, "RepVGG-A1", 10, 1, 32, tmp_path / "last.pth", DistEnv())


def test_checkpoint_meta_of_a_renamed_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    from repvgg_deploy.train.evaluate import _checkpoint_meta

    named = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(named), metadata={"img_size": "48", "dataset": '"fake"'})
    renamed = tmp_path / "m.pth"
    renamed.write_bytes(named.read_bytes())
    assert _checkpoint_meta(named) == _checkpoint_meta(renamed) == {"img_size": 48, "dataset": "fake"}

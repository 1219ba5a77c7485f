"""Checkpoint import: this project's, the official release's and timm's layouts, and bad files."""
import re

import pytest
import torch
from safetensors.torch import save_file

from repvgg_deploy import create_model, load_checkpoint, read_checkpoint, reparameterize, save_checkpoint
from repvgg_deploy.checkpoint import detect_layout, suggest_archs
from repvgg_deploy.errors import CheckpointError, UnknownArchError

from conftest import randomize_bn


def _model(arch="A0", num_classes=10, in_chans=3, seed=0):
    torch.manual_seed(seed)
    return randomize_bn(create_model(arch, num_classes=num_classes, in_chans=in_chans).eval(), seed)


def _to_timm(sd):
    """This project's (= official) key names -> timm ByobNet's, as timm documents them."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^stage0\.", "stem.", k)
        k = re.sub(r"^stage(\d)\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.{m.group(2)}.", k)
        k = k.replace(".rbr_dense.", ".conv_kxk.").replace(".rbr_1x1.", ".conv_1x1.")
        k = k.replace(".rbr_identity.", ".identity.").replace(".rbr_reparam.", ".reparam_conv.")
        k = re.sub(r"^linear\.", "head.fc.", k)
        out[k] = v
    return out


def _same_outputs(a, b, shape=(2, 3, 64, 64)):
    x = torch.randn(*shape)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    # float32: fused and unfused models agree to ~1e-6 of the output scale
    return float((ya - yb).abs().max() / ya.abs().max()) <= 1e-5


def test_own_format_roundtrip_pth_and_safetensors(tmp_path):
    model = _model("B1g4")
    for name in ("own.pth", "own.safetensors"):
        path = tmp_path / name
        save_checkpoint(model, path, img_size=64, mean=[0.5] * 3, std=[0.25] * 3)
        info = read_checkpoint(path)
        assert info.layout == "repvgg-deploy" and info.arch == "RepVGG-B1g4" and not info.deploy
        loaded = load_checkpoint(path)
        assert loaded.arch == "RepVGG-B1g4" and loaded.pretrained_cfg["img_size"] == 64
        assert loaded.pretrained_cfg["std"] == [0.25] * 3
        assert _same_outputs(model, loaded)


def test_own_deploy_form_loads_as_deploy(tmp_path):
    model = _model("A1")
    path = tmp_path / "deploy.pth"
    save_checkpoint(reparameterize(model), path)
    loaded = load_checkpoint(path, arch="A1")
    assert read_checkpoint(path).deploy and not hasattr(loaded.stage0, "rbr_dense")
    assert _same_outputs(model, loaded)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_layout(tmp_path, wrap, prefix):
    model = _model("A0", num_classes=1000)
    sd = {prefix + k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "stage0.rbr_dense.conv.weight" in model.state_dict()
    assert "stage1.1.rbr_identity.running_var" in model.state_dict()
    assert "linear.weight" in model.state_dict()
    path = tmp_path / "official.pth"
    torch.save({wrap: sd, "epoch": 120} if wrap else sd, path)
    info = read_checkpoint(path)
    assert info.layout == "official" and info.arch is None
    assert suggest_archs(info) == ["RepVGG-A0"]
    loaded = load_checkpoint(path)  # arch inferred from the shapes
    assert loaded.arch == "RepVGG-A0"
    assert _same_outputs(model, loaded)


def test_official_deploy_layout(tmp_path):
    model = _model("B0", num_classes=1000)
    deploy_sd = reparameterize(model).state_dict()
    assert "stage2.3.rbr_reparam.weight" in deploy_sd
    path = tmp_path / "RepVGG-B0-deploy.pth"
    torch.save(deploy_sd, path)
    loaded = load_checkpoint(path, arch="RepVGG-B0")
    assert _same_outputs(model, loaded)


def test_timm_layout_training_and_deploy(tmp_path):
    model = _model("B2g4", num_classes=1000)
    sd = _to_timm(model.state_dict())
    assert "stem.conv_kxk.conv.weight" in sd and "stages.0.1.conv_1x1.bn.weight" in sd
    assert "stages.0.1.identity.running_mean" in sd and "head.fc.weight" in sd
    assert detect_layout(sd) == "timm"
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    loaded = load_checkpoint(path, arch="repvgg_b2g4")
    assert read_checkpoint(path).layout == "timm"
    assert _same_outputs(model, loaded)
    renamed = tmp_path / "timm-model.bin"  # a safetensors file under another name is still read as one
    renamed.write_bytes(path.read_bytes())
    assert read_checkpoint(renamed).layout == "timm" and _same_outputs(model, load_checkpoint(renamed, arch="B2g4"))

    dsd = _to_timm(reparameterize(model).state_dict())
    assert "stages.2.5.reparam_conv.weight" in dsd
    dpath = tmp_path / "timm-deploy.pth"
    torch.save({"state_dict": dsd}, dpath)
    assert _same_outputs(model, load_checkpoint(dpath, arch="B2g4"))


def test_qa_checkpoint_detected(tmp_path):
    model = _model("QA-A0")
    path = tmp_path / "qa.pth"
    torch.save(model.state_dict(), path)  # bare, no metadata: block type from the keys
    info = read_checkpoint(path)
    assert info.block == "qarepvgg" and suggest_archs(info) == ["QARepVGG-A0"]
    assert _same_outputs(model, load_checkpoint(path))
    with pytest.raises(CheckpointError, match="QARepVGG blocks, not RepVGG-A0"):
        load_checkpoint(path, arch="A0")


def test_grayscale_and_class_count_inferred(tmp_path):
    model = _model("A0", num_classes=7, in_chans=1)
    path = tmp_path / "gray.pth"
    torch.save({"model": model.state_dict()}, path)
    loaded = load_checkpoint(path, arch="A0")
    assert loaded.num_classes == 7 and loaded.in_chans == 1
    assert _same_outputs(model, loaded, shape=(2, 1, 32, 32))


# ------------------------------------------------------------------ bad files


def test_missing_empty_truncated_garbage(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)
    good = tmp_path / "good.pth"
    save_checkpoint(_model(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n" * 10)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint|truncated or corrupt"):
        load_checkpoint(text)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(bad_st)


class Evil:
    """Unpickling this would call a function: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_that_needs_code_execution_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": _model().state_dict(), "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="execute code"):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out


def test_wrong_arch_and_class_count(tmp_path):
    path = tmp_path / "a1.pth"
    torch.save(_model("A1").state_dict(), path)  # no metadata: shapes decide
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, arch="A0")
    msg = str(e.value)
    assert "does not fit RepVGG-A0" in msg and "shape mismatches" in msg and "suggest RepVGG-A1" in msg
    with pytest.raises(CheckpointError, match="has 10 classes, not 5"):
        load_checkpoint(path, num_classes=5)
    own = tmp_path / "own-a1.pth"
    save_checkpoint(_model("A1"), own)
    with pytest.raises(CheckpointError, match="holds a RepVGG-A1 checkpoint, not RepVGG-B0"):
        load_checkpoint(own, arch="B0")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = _model("A0").state_dict()
    sd.pop("stage3.5.rbr_dense.bn.running_var")
    sd["stage3.5.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, arch="A0")
    assert "missing keys: stage3.5.rbr_dense.bn.running_var" in str(e.value)
    assert "unexpected keys: stage3.5.extra.weight" in str(e.value)


def test_not_a_repvgg_state_dict(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not a RepVGG checkpoint"):
        load_checkpoint(path)


# ------------------------------------------------------------------ wrappers, EMA, BN counters


def test_foreign_wrapper_arch_that_is_no_arch_name_is_ignored(tmp_path):
    """timm's CheckpointSaver writes 'arch': 'byobnet' (the class name); the weights still load."""
    model = _model("A0")
    path = tmp_path / "timm-saver.pth"
    torch.save({"epoch": 3, "arch": "byobnet", "state_dict": _to_timm(model.state_dict()), "version": 2,
                "metric": 71.5}, path)
    info = read_checkpoint(path)
    assert info.layout == "timm" and info.arch is None and info.meta["arch"] == "byobnet"
    assert _same_outputs(model, load_checkpoint(path))
    assert _same_outputs(model, load_checkpoint(path, arch="A0"))
    official = tmp_path / "official-wrapper.pth"
    torch.save({"epoch": 3, "arch": "RepVGG-A0", "state_dict": model.state_dict()}, official)
    assert read_checkpoint(official).arch == "RepVGG-A0"  # an arch name in a foreign wrapper is still used
    own = tmp_path / "own-bad-arch.pth"
    torch.save({"format": "repvgg-deploy", "format_version": 1, "arch": "byobnet", "model": model.state_dict()}, own)
    with pytest.raises(UnknownArchError, match="unknown arch 'byobnet'"):
        read_checkpoint(own)  # this project's files must name a real arch


def test_use_ema(tmp_path):
    raw, ema = _model("A0", seed=1), _model("A0", seed=2)
    bare = tmp_path / "bare.pth"
    torch.save(raw.state_dict(), bare)
    with pytest.raises(CheckpointError, match="holds no EMA weights"):
        load_checkpoint(bare, use_ema=True)
    wrapped = tmp_path / "last-like.pth"
    torch.save({"model": raw.state_dict(), "model_ema": ema.state_dict(), "epoch": 3}, wrapped)
    assert _same_outputs(ema, load_checkpoint(wrapped, use_ema=True))
    assert _same_outputs(raw, load_checkpoint(wrapped))
    for name in ("best.pth", "best.safetensors"):  # repvgg-train's best.pth of an EMA run: "model" is the EMA
        best = tmp_path / name
        save_checkpoint(ema, best, ema=True, epoch=3)
        assert _same_outputs(ema, load_checkpoint(best, use_ema=True))
        assert _same_outputs(ema, load_checkpoint(best))
    for name in ("plain.pth", "plain.safetensors"):
        plain = tmp_path / name
        save_checkpoint(raw, plain)
        with pytest.raises(CheckpointError, match="holds no EMA weights"):
            load_checkpoint(plain, use_ema=True)
        save_checkpoint(raw, plain, ema=False)
        with pytest.raises(CheckpointError, match="holds no EMA weights"):
            load_checkpoint(plain, use_ema=True)


def test_bn_counters_the_model_lacks_or_the_file_lacks(tmp_path):
    model = _model("A0")
    deploy_sd = reparameterize(model).state_dict()
    deploy_sd["stage1.0.rbr_dense.bn.num_batches_tracked"] = torch.tensor(0)  # a deploy model has no BN
    path = tmp_path / "deploy-stray.pth"
    torch.save(deploy_sd, path)
    assert _same_outputs(model, load_checkpoint(path))
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["stage1.0.rbr_1x1.bn.num_batches_tracked"] = torch.tensor(5)  # the model has it: kept; the others added
    sd["stage1.0.rbr_identity.num_batches_tracked"] = torch.tensor(5)  # stride 2, no identity branch: dropped
    path = tmp_path / "train-stray.pth"
    torch.save(sd, path)
    loaded = load_checkpoint(path, arch="A0")
    assert _same_outputs(model, loaded)
    assert int(loaded.state_dict()["stage1.0.rbr_1x1.bn.num_batches_tracked"]) == 5
    sd.pop("linear.bias")
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, arch="A0")
    assert "1 missing keys: linear.bias" in str(e.value) and "unexpected" not in str(e.value)

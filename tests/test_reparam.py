"""Fusion is exact: the deploy model computes the training-form model's function."""

import pytest
import torch
import torch.nn as nn

from repvgg_deploy.fuse import fuse_bn, identity_kernel, pad_1x1_to_3x3, reparameterize, reparameterize_
from repvgg_deploy.fuse.reparam import is_deploy, repvgg_model_convert
from repvgg_deploy.models import QARepVGGBlock, RepVGGBlock, create_model, list_archs

from conftest import randomize_bn

ALL_ARCHS = list_archs()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_equivalence_float64_every_arch(arch):
    torch.manual_seed(0)
    model = randomize_bn(create_model(arch, num_classes=10).double().eval(), seed=1)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        deploy = reparameterize(model)
        out = deploy(x)
    assert is_deploy(deploy) and not is_deploy(model)
    assert _rel_err(ref, out) <= 1e-9


@pytest.mark.parametrize("arch", ["A0", "B1g2", "QA-A0", "QA-B2g4"])
def test_equivalence_float32(arch):
    torch.manual_seed(0)
    model = randomize_bn(create_model(arch, num_classes=10).eval(), seed=2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = reparameterize(model)(x)
    assert _rel_err(ref, out) <= 1e-5


@pytest.mark.parametrize("block_cls", [RepVGGBlock, QARepVGGBlock])
@pytest.mark.parametrize("cin,cout,stride,groups", [(8, 8, 1, 1), (8, 8, 1, 4), (8, 16, 2, 2), (4, 8, 1, 1)])
def test_block_equivalence(block_cls, cin, cout, stride, groups):
    torch.manual_seed(3)
    block = randomize_bn(block_cls(cin, cout, 3, stride=stride, padding=1, groups=groups).double().eval(), 4)
    assert (block.rbr_identity is not None) == (cin == cout and stride == 1)
    x = torch.randn(3, cin, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        ref = block(x)
        block.switch_to_deploy()
        out = block(x)
    assert _rel_err(ref, out) <= 1e-12
    assert not hasattr(block, "rbr_dense") and not hasattr(block, "rbr_1x1")
    block.switch_to_deploy()  # idempotent: a second call changes nothing
    with torch.no_grad():
        assert torch.equal(block(x), out)


def test_equivalent_kernel_is_differentiable():
    block = RepVGGBlock(4, 4, 3, padding=1).train()
    kernel, bias = block.get_equivalent_kernel_bias()
    (kernel.square().sum() + bias.sum()).backward()
    assert block.rbr_dense.conv.weight.grad is not None
    assert block.rbr_1x1.bn.weight.grad is not None
    assert block.rbr_identity.weight.grad is not None


def test_bn_fold_matches_the_equation():
    bn = randomize_bn(nn.BatchNorm2d(5).double().eval(), 7)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    k, b = fuse_bn(w, bn)
    std = (bn.running_var + bn.eps).sqrt()
    assert torch.allclose(k, w * (bn.weight / std).view(-1, 1, 1, 1))
    assert torch.allclose(b, bn.bias - bn.running_mean * bn.weight / std)


def test_pad_and_identity_kernels():
    k1 = torch.randn(4, 2, 1, 1)
    k3 = pad_1x1_to_3x3(k1)
    assert k3.shape == (4, 2, 3, 3) and torch.equal(k3[:, :, 1, 1], k1[:, :, 0, 0]) and torch.allclose(k3.abs().sum(), k1.abs().sum())
    ident = identity_kernel(6, groups=3)
    x = torch.randn(1, 6, 5, 5)
    assert torch.equal(nn.functional.conv2d(x, ident, padding=1, groups=3), x)


class Detector(nn.Module):
    """A model that merely contains RepVGG blocks (a backbone inside something else)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(RepVGGBlock(3, 8, 3, stride=2, padding=1), RepVGGBlock(8, 8, 3, padding=1))
        self.neck = nn.ModuleDict({"p": QARepVGGBlock(8, 8, 3, padding=1, groups=2)})
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.neck["p"](self.backbone(x)))


def test_walker_converts_any_module():
    torch.manual_seed(5)
    model = randomize_bn(Detector().double().eval(), 6)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        deploy = reparameterize(model)
        assert _rel_err(ref, deploy(x)) <= 1e-12
    assert not is_deploy(model), "the copy variant must leave the original alone"
    reparameterize_(model)
    assert is_deploy(model)


def test_repvgg_model_convert_saves_the_deploy_state_dict(tmp_path):
    """The official release's entry point: a fused copy (the original untouched), and its state dict on disk."""
    torch.manual_seed(7)
    model = randomize_bn(Detector().double().eval(), 8)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    path = tmp_path / "deploy.pth"
    with torch.no_grad():
        ref = model(x)
        converted = repvgg_model_convert(model, save_path=str(path))
        assert is_deploy(converted) and not is_deploy(model)
        assert _rel_err(ref, converted(x)) <= 1e-12
        fresh = reparameterize_(Detector().double().eval())
        fresh.load_state_dict(torch.load(path, weights_only=True))
        assert torch.equal(fresh(x), converted(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.pth"]
    in_place = repvgg_model_convert(model, do_copy=False)
    assert in_place is model and is_deploy(model)


def test_walker_calls_timm_style_reparameterize():
    class TimmStyle(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def reparameterize(self):
            self.calls += 1

    m = nn.Sequential(TimmStyle(), nn.Sequential(TimmStyle()))
    reparameterize_(m)
    assert m[0].calls == 1 and m[1][0].calls == 1

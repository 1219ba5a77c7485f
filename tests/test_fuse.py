"""is_deploy and export_onnx(fuse=True) on blocks that are not this project's: the official release's and timm's."""
import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

from repvgg_deploy import export_onnx
from repvgg_deploy.backend.onnxrt import OnnxrtRunner
from repvgg_deploy.export import get_metadata
from repvgg_deploy.fuse import is_deploy, reparameterize, reparameterize_


class OfficialStyleBlock(nn.Module):
    """The official release's pattern: no ``is_multibranch``; ``switch_to_deploy()`` adds ``rbr_reparam``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rbr_dense = nn.Conv2d(channels, channels, 3, padding=1)
        self.rbr_1x1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return F.relu(self.rbr_reparam(x))
        return F.relu(self.rbr_dense(x) + self.rbr_1x1(x))

    def switch_to_deploy(self) -> None:
        if hasattr(self, "rbr_reparam"):
            return
        conv = nn.Conv2d(self.rbr_dense.in_channels, self.rbr_dense.out_channels, 3, padding=1)
        conv.weight.data = self.rbr_dense.weight.detach() + F.pad(self.rbr_1x1.weight.detach(), [1, 1, 1, 1])
        conv.bias.data = self.rbr_dense.bias.detach() + self.rbr_1x1.bias.detach()
        self.rbr_reparam = conv
        del self.rbr_dense, self.rbr_1x1


class TimmStyleBlock(nn.Module):
    """timm's pattern: ``reparam_conv`` is None until ``reparameterize()``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_kxk = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_1x1 = nn.Conv2d(channels, channels, 1)
        self.reparam_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return F.relu(self.reparam_conv(x))
        return F.relu(self.conv_kxk(x) + self.conv_1x1(x))

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        conv = nn.Conv2d(self.conv_kxk.in_channels, self.conv_kxk.out_channels, 3, padding=1)
        conv.weight.data = self.conv_kxk.weight.detach() + F.pad(self.conv_1x1.weight.detach(), [1, 1, 1, 1])
        conv.bias.data = self.conv_kxk.bias.detach() + self.conv_1x1.bias.detach()
        self.reparam_conv = conv
        del self.conv_kxk, self.conv_1x1


def _net(block: type) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(block(4), block(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    model.in_chans = 4
    return model


def test_is_deploy_sees_official_and_timm_training_form():
    for block in (OfficialStyleBlock, TimmStyleBlock):
        model = _net(block)
        assert not is_deploy(model), block.__name__
        assert is_deploy(reparameterize(model)) and not is_deploy(model)
        reparameterize_(model)
        assert is_deploy(model)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert is_deploy(plain)


def test_export_fuses_official_and_timm_blocks(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 4, 32, 32)).astype(np.float32)
    for block in (OfficialStyleBlock, TimmStyleBlock):
        model = _net(block)
        out = tmp_path / f"{block.__name__}.onnx"
        proto = export_onnx(model, out, img_size=32, fuse=True)
        kernels = [list(t.dims) for t in proto.graph.initializer if len(t.dims) == 4]
        assert kernels == [[4, 4, 3, 3]] * 2, (block.__name__, kernels)
        assert get_metadata(onnx.load(str(out)))["fused"] is True
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert np.abs(OnnxrtRunner(out)(x) - ref).max() <= 1e-5 * np.abs(ref).max()
        assert not is_deploy(model), "export_onnx must leave the model unfused"
        unfused = export_onnx(model, tmp_path / "unfused.onnx", img_size=32, fuse=False)
        assert get_metadata(unfused)["fused"] is False

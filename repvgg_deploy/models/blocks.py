"""The two training-time blocks and their deploy form.

``RepVGGBlock`` is the paper's block (3x3 conv-BN + 1x1 conv-BN + BN identity, then ReLU);
``QARepVGGBlock`` is the quantization-friendly block of Chu et al. ("Make RepVGG Greater
Again"): no BN on the 1x1 and identity branches and one BN after the sum. Both turn into a
single biased 3x3 conv followed by ReLU through ``switch_to_deploy()``. Module and method
names follow the official release, so its checkpoints load without renaming.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..fuse.reparam import KernelBias, fuse_bn, identity_kernel, pad_1x1_to_3x3

__all__ = ["conv_bn", "RepVGGBlock", "QARepVGGBlock"]


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) followed by BatchNorm, named ``conv`` and ``bn`` as in the official release."""
    result = nn.Sequential()
    result.add_module(
        "conv",
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=False),
    )
    result.add_module("bn", nn.BatchNorm2d(out_channels))
    return result


class _RepBlockBase(nn.Module):
    """What both blocks share: the deploy conv, ``forward`` in deploy form, ``switch_to_deploy``."""

    rbr_reparam: nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, deploy: bool) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.groups = groups
        self.deploy = deploy
        self.nonlinearity = nn.ReLU()
        if deploy:
            self.rbr_reparam = self._make_reparam_conv()

    def _make_reparam_conv(self) -> nn.Conv2d:
        return nn.Conv2d(
            self.in_channels, self.out_channels, 3, stride=self.stride, padding=1, groups=self.groups, bias=True
        )

    @property
    def has_identity(self) -> bool:
        return self.in_channels == self.out_channels and self.stride == 1

    @property
    def is_multibranch(self) -> bool:
        return not hasattr(self, "rbr_reparam")

    def get_equivalent_kernel_bias(self) -> KernelBias:  # pragma: no cover - abstract
        raise NotImplementedError

    def _branch_names(self) -> Tuple[str, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Replace the branches by the one equivalent 3x3 conv (idempotent)."""
        if hasattr(self, "rbr_reparam"):
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        conv = self._make_reparam_conv().to(device=kernel.device, dtype=kernel.dtype)
        conv.weight.data.copy_(kernel)
        conv.bias.data.copy_(bias)  # type: ignore[union-attr]
        for name in self._branch_names():
            if hasattr(self, name):
                delattr(self, name)
        self.rbr_reparam = conv
        self.deploy = True

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}, groups={self.groups}, deploy={self.deploy}"


class RepVGGBlock(_RepBlockBase):
    """RepVGG block: ``ReLU(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))``, identity only when shapes allow."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        groups: int = 1,
        deploy: bool = False,
    ) -> None:
        if kernel_size != 3 or padding != 1:
            raise ValueError("RepVGGBlock is a 3x3 block with padding 1")
        super().__init__(in_channels, out_channels, stride, groups, deploy)
        if not deploy:
            self.rbr_identity: Optional[nn.BatchNorm2d] = nn.BatchNorm2d(in_channels) if self.has_identity else None
            self.rbr_dense = conv_bn(in_channels, out_channels, 3, stride, 1, groups)
            self.rbr_1x1 = conv_bn(in_channels, out_channels, 1, stride, 0, groups)

    def _branch_names(self) -> Tuple[str, ...]:
        return ("rbr_dense", "rbr_1x1", "rbr_identity")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.nonlinearity(self.rbr_reparam(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.nonlinearity(out)

    def get_equivalent_kernel_bias(self) -> KernelBias:
        """``W = W3' + pad(W1') + I'`` and ``b = b3' + b1' + b0'`` (each ``'`` = its BN folded)."""
        k3, b3 = fuse_bn(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = fuse_bn(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel, bias = k3 + pad_1x1_to_3x3(k1), b3 + b1
        if self.rbr_identity is not None:
            ident = identity_kernel(self.in_channels, self.groups, 3, dtype=k3.dtype, device=k3.device)
            k0, b0 = fuse_bn(ident, self.rbr_identity)
            kernel, bias = kernel + k0, bias + b0
        return kernel, bias


class QARepVGGBlock(_RepBlockBase):
    """QARepVGG block: ``ReLU(BN(BN3(conv3x3(x)) + conv1x1(x) + x))``.

    The 1x1 branch is a bare conv and the identity has no BN, so the fused kernel's
    per-channel spread stays small (the cause of RepVGG's INT8 collapse); the one BN after
    the sum is folded into the fused conv as well, so the deploy form is the same single
    biased 3x3 conv as RepVGG's.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        groups: int = 1,
        deploy: bool = False,
    ) -> None:
        if kernel_size != 3 or padding != 1:
            raise ValueError("QARepVGGBlock is a 3x3 block with padding 1")
        super().__init__(in_channels, out_channels, stride, groups, deploy)
        if not deploy:
            self.rbr_dense = conv_bn(in_channels, out_channels, 3, stride, 1, groups)
            self.rbr_1x1 = nn.Conv2d(in_channels, out_channels, 1, stride=stride, groups=groups, bias=False)
            self.rbr_identity: Optional[nn.Identity] = nn.Identity() if self.has_identity else None
            self.bn = nn.BatchNorm2d(out_channels)

    def _branch_names(self) -> Tuple[str, ...]:
        return ("rbr_dense", "rbr_1x1", "rbr_identity", "bn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.nonlinearity(self.rbr_reparam(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + x
        return self.nonlinearity(self.bn(out))

    def get_equivalent_kernel_bias(self) -> KernelBias:
        """``W = g/s * (W3' + pad(W1) + I)`` and ``b = beta + (b3' - mu) * g/s`` (post-add BN folded last)."""
        k3, b3 = fuse_bn(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        kernel = k3 + pad_1x1_to_3x3(self.rbr_1x1.weight)
        if self.rbr_identity is not None:
            kernel = kernel + identity_kernel(self.in_channels, self.groups, 3, dtype=k3.dtype, device=k3.device)
        return fuse_bn(kernel, self.bn, conv_bias=b3)

"""Structural re-parameterization: the paper's equations, and a walker for any module.

A RepVGG block computes, for input ``M`` (Ding et al., 2021, eq. 1-3)::

    out = bn(M * W3, mu3, sigma3, gamma3, beta3)
        + bn(M * W1, mu1, sigma1, gamma1, beta1)
        + bn(M,      mu0, sigma0, gamma0, beta0)

with ``bn(X, mu, sigma, gamma, beta) = (X - mu) * gamma / sigma + beta`` per channel.
Each term is a conv with a bias once its BN is folded in::

    W' = (gamma / sigma) * W          b' = beta - mu * gamma / sigma

the 1x1 kernel becomes a 3x3 kernel by zero-padding around its centre, and the identity
is a 3x3 conv whose kernel is 1 at the centre of channel ``i``'s own input. The three
kernels and biases then add up into one 3x3 conv. Every function here is plain torch
arithmetic, so it is differentiable and works in any dtype or device.
"""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "fuse_bn",
    "pad_1x1_to_3x3",
    "identity_kernel",
    "reparameterize_model",
    "reparameterize",
    "reparameterize_",
    "repvgg_model_convert",
    "is_deploy",
]

KernelBias = Tuple[torch.Tensor, torch.Tensor]


def fuse_bn(kernel: Optional[torch.Tensor], bn: nn.BatchNorm2d, conv_bias: Optional[torch.Tensor] = None) -> KernelBias:
    """Fold ``bn`` (in eval form) into the conv ``kernel`` that precedes it.

    ``W' = W * gamma / sigma`` and ``b' = beta + (b - mu) * gamma / sigma`` with
    ``sigma = sqrt(running_var + eps)``. ``kernel=None`` means the identity (a bare BN),
    for which the caller passes the identity kernel instead; this function then needs
    a kernel, so it is an error.
    """
    if kernel is None:
        raise ValueError("fuse_bn needs a kernel; pass identity_kernel(...) for a bare BatchNorm")
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    mean = bn.running_mean
    if conv_bias is not None:
        mean = mean - conv_bias
    t = gamma / std
    return kernel * t.reshape(-1, 1, 1, 1), beta - mean * t


def pad_1x1_to_3x3(kernel: torch.Tensor) -> torch.Tensor:
    """A 1x1 kernel as the 3x3 kernel with the same weight at the centre and zeros around it."""
    return F.pad(kernel, [1, 1, 1, 1])


def identity_kernel(
    channels: int,
    groups: int = 1,
    kernel_size: int = 3,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """The ``kernel_size`` x ``kernel_size`` conv kernel that maps a tensor to itself.

    Shape ``(channels, channels // groups, k, k)``: output channel ``i`` reads input
    channel ``i % (channels // groups)`` of its own group at the kernel centre.
    """
    input_dim = channels // groups
    kernel = torch.zeros(channels, input_dim, kernel_size, kernel_size, dtype=dtype, device=device)
    idx = torch.arange(channels, device=device)
    kernel[idx, idx % input_dim, kernel_size // 2, kernel_size // 2] = 1
    return kernel


def _convert_one(module: nn.Module) -> bool:
    """Switch one block to its deploy form if it knows how; True if it did."""
    for method in ("switch_to_deploy", "reparameterize"):  # official release / timm
        fn = getattr(module, method, None)
        if callable(fn):
            fn()
            return True
    return False


@torch.no_grad()
def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fuse every re-parameterizable block inside ``model`` (any ``nn.Module``).

    Walks all sub-modules, so a detector or segmenter with a RepVGG backbone is converted
    too. Blocks are recognised by a ``switch_to_deploy()`` method (this project and the
    official release) or a ``reparameterize()`` method (timm). Returns a deploy copy in
    eval mode unless ``inplace`` is set, in which case ``model`` itself is converted.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        _convert_one(module)
    return model


def reparameterize(model: nn.Module) -> nn.Module:
    """Deploy copy of ``model``: every RepVGG block fused into one 3x3 conv (the original is untouched)."""
    return reparameterize_model(model, inplace=False)


def reparameterize_(model: nn.Module) -> nn.Module:
    """In-place variant of :func:`reparameterize`; returns ``model``."""
    return reparameterize_model(model, inplace=True)


def repvgg_model_convert(model: nn.Module, save_path: Optional[str] = None, do_copy: bool = True) -> nn.Module:
    """The official release's entry point: fuse, optionally save the deploy state dict."""
    model = reparameterize_model(model, inplace=not do_copy)
    if save_path is not None:
        from ..utils.io import atomic_torch_save

        atomic_torch_save(model.state_dict(), save_path)
    return model


def _is_multibranch(module: nn.Module) -> bool:
    """True for a block still in training form: this project's, the official release's or timm's."""
    if getattr(module, "is_multibranch", False):  # this project
        return True
    if callable(getattr(module, "switch_to_deploy", None)) and not hasattr(module, "is_multibranch"):
        return getattr(module, "rbr_reparam", None) is None  # official release: rbr_reparam once fused
    if callable(getattr(module, "reparameterize", None)):
        return getattr(module, "reparam_conv", None) is None  # timm: reparam_conv None until fused
    return False


def is_deploy(model: nn.Module) -> bool:
    """True when no sub-module is left in training (multi-branch) form.

    A block is in training form when it says so (``is_multibranch``, this project), when it
    has ``switch_to_deploy()`` but no ``rbr_reparam`` (the official release), or when it has
    ``reparameterize()`` and ``reparam_conv`` is missing or None (timm).
    """
    return not any(_is_multibranch(m) for m in model.modules())

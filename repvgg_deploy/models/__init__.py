"""Stage 1 of the pipeline: the RepVGG / QARepVGG model family."""
from .blocks import QARepVGGBlock, RepVGGBlock, conv_bn
from .config import ARCHS, RepVGGCfg, arch_slug, get_config, list_archs, resolve_arch
from .repvgg import IMAGENET_MEAN, IMAGENET_STD, RepVGG, block_list, count_params, create_model

__all__ = [
    "ARCHS", "RepVGGCfg", "RepVGG", "RepVGGBlock", "QARepVGGBlock", "conv_bn", "create_model",
    "list_archs", "resolve_arch", "get_config", "arch_slug", "count_params", "block_list",
    "IMAGENET_MEAN", "IMAGENET_STD",
]

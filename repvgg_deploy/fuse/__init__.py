"""Stage 2 of the pipeline: structural re-parameterization (branches -> one 3x3 conv)."""
from .reparam import (
    fuse_bn, identity_kernel, is_deploy, pad_1x1_to_3x3, reparameterize, reparameterize_,
    reparameterize_model, repvgg_model_convert,
)

__all__ = [
    "fuse_bn", "pad_1x1_to_3x3", "identity_kernel", "reparameterize_model", "reparameterize",
    "reparameterize_", "repvgg_model_convert", "is_deploy",
]

"""dog-init: Difference-of-Gaussian initialisation of depthwise convolutions.

Babaiee, Kiasari, Rus, Grosu, "Unveiling the Unseen: Identifiable Clusters in Trained Depthwise Convolutional
Kernels", ICLR 2024.

>>> import timm, dog_init
>>> model = timm.create_model("convnext_atto")
>>> report = dog_init.dog_init_(model, mix="paper", seed=0)

Every public name is importable from here and loaded on first use, so that the torch-free parts (``dog_init.files``,
the safe file writing every package uses) import without torch.
"""
from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

# module (relative to this package) -> the public names it defines
_EXPORTS = {
    "families": ("FAMILIES", "PARAMS", "SECOND_DERIVATIVE_KINDS", "SQUARE_CORNERS", "generate", "render",
                 "sample_params"),
    "mixes": ("MIXES", "sample", "allocate", "resolve_mix"),
    "init": ("dog_init_", "InitReport", "LayerInit", "find_depthwise", "depthwise_reason", "default_std"),
    "registry": ("get_init", "list_inits", "register_init"),
    "covariance": ("covariance_init_",),
    "structured": ("impulse_init_", "box_init_", "gaussian_init_"),
    "bank": ("bank_init_",),
    "dogconv": ("DoGConv2d", "BOUNDS"),
    "convert": ("convert_", "bake_", "convert_reason", "depthwise_stats"),
    "profile": ("Profile", "LayerProfile", "load_profile", "save_profile"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

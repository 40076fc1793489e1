"""dog-init: Difference-of-Gaussian initialisation of depthwise convolutions.

Babaiee, Kiasari, Rus, Grosu, "Unveiling the Unseen: Identifiable Clusters in Trained Depthwise Convolutional
Kernels", ICLR 2024.

>>> import timm, dog_init
>>> model = timm.create_model("convnext_atto")
>>> report = dog_init.dog_init_(model, mix="paper", seed=0)
"""
from .families import FAMILIES, PARAMS, SECOND_DERIVATIVE_KINDS, SQUARE_CORNERS, generate, render, sample_params
from .init import InitReport, LayerInit, default_std, depthwise_reason, dog_init_, find_depthwise
from .mixes import MIXES, allocate, resolve_mix, sample
from .registry import get_init, list_inits, register_init
from .dogconv import BOUNDS, DoGConv2d
from .convert import bake_, convert_, convert_reason, depthwise_stats
from .profile import LayerProfile, Profile, load_profile, save_profile

__version__ = "0.1.0"

__all__ = [
    "FAMILIES", "PARAMS", "SECOND_DERIVATIVE_KINDS", "SQUARE_CORNERS", "MIXES",
    "generate", "render", "sample_params", "sample", "allocate", "resolve_mix",
    "dog_init_", "InitReport", "LayerInit", "find_depthwise", "depthwise_reason", "default_std",
    "get_init", "list_inits", "register_init",
    "DoGConv2d", "BOUNDS", "convert_", "bake_", "convert_reason", "depthwise_stats",
    "Profile", "LayerProfile", "load_profile", "save_profile",
]

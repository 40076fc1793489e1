"""timm names for the CIFAR-sized ConvMixers the toolkit trains, so every part (``analysis`` sources ``timm:NAME``,
``train`` recipes) builds them like any timm model.

timm ships ConvMixer-768/32, -1024/20 and -1536/20 only. Trockman & Kolter ("Patches Are All You Need?", 2022)
train ConvMixer-256/8 on CIFAR-10; ConvMixer-128/6 is its quarter-compute sibling for CPU budgets. Both keep timm's
ConvMixer defaults (GELU, kernel 9, patch 7) unless given (``timm.create_model("convmixer_256_8", kernel_size=7,
patch_size=2)``; ``dim`` and ``depth`` may be overridden too). Importing this module registers them (once).
"""
from __future__ import annotations

import timm
from torch import nn
from timm.models import generate_default_cfgs, register_model
from timm.models.convmixer import ConvMixer, _cfg, _create_convmixer

__all__ = ["EXTRA_MODELS", "create_model"]

EXTRA_MODELS = {"convmixer_256_8": {"dim": 256, "depth": 8}, "convmixer_128_6": {"dim": 128, "depth": 6}}
# timm's own ConvMixer entry points fix these (``dict(dim=768, ..., **kwargs)``), so a kwarg such as the paper's
# patch_size=14 for ConvMixer-768/32 raises a TypeError there; ``create_model`` builds them with the same defaults,
# overridable, through timm's ``_create_convmixer`` (pretrained weights and configs included).
TIMM_CONVMIXERS = {
    "convmixer_768_32": {"dim": 768, "depth": 32, "kernel_size": 7, "patch_size": 7, "act_layer": nn.ReLU},
    "convmixer_1024_20_ks9_p14": {"dim": 1024, "depth": 20, "kernel_size": 9, "patch_size": 14},
    "convmixer_1536_20": {"dim": 1536, "depth": 20, "kernel_size": 9, "patch_size": 7},
}

# CIFAR-sized inputs; no published weights (timm then answers pretrained=True with a clear error).
default_cfgs = generate_default_cfgs({name: _cfg(input_size=(3, 32, 32), crop_pct=1.0) for name in EXTRA_MODELS})


def _convmixer(variant: str, pretrained: bool, **kwargs) -> ConvMixer:
    return _create_convmixer(variant, pretrained, **{"kernel_size": 9, "patch_size": 7, **EXTRA_MODELS[variant],
                                                     **kwargs})


if not timm.is_model("convmixer_256_8"):   # a module reload must not register twice
    @register_model
    def convmixer_256_8(pretrained: bool = False, **kwargs) -> ConvMixer:
        """ConvMixer-256/8, the CIFAR-10 model of Trockman & Kolter (kernel 9 patch 7 unless set)."""
        return _convmixer("convmixer_256_8", pretrained, **kwargs)

    @register_model
    def convmixer_128_6(pretrained: bool = False, **kwargs) -> ConvMixer:
        """ConvMixer-128/6: a small CIFAR-scale ConvMixer for CPU budgets (kernel 9 patch 7 unless set)."""
        return _convmixer("convmixer_128_6", pretrained, **kwargs)


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model``, except that timm's ConvMixers take overrides of their fixed arguments too
    (``create_model("convmixer_768_32", patch_size=14)``, as in the paper's Appendix F)."""
    base, _, tag = name.partition(".")
    if base in TIMM_CONVMIXERS and set(kwargs) & set(TIMM_CONVMIXERS[base]):
        args = {**TIMM_CONVMIXERS[base], **kwargs}
        return _create_convmixer(base, pretrained, **({"pretrained_cfg": tag} if tag else {}), **args)
    return timm.create_model(name, pretrained=pretrained, **kwargs)

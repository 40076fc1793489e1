"""A tiny registry of initialisers, in the style of timm's ``get_init``: name -> ``fn(model, **kwargs)``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .bank import bank_init_
from .covariance import covariance_init_
from .init import dog_init_
from .structured import box_init_, gaussian_init_, impulse_init_

__all__ = ["register_init", "get_init", "list_inits"]

InitFn = Callable[..., object]
_INITS: dict[str, InitFn] = {}


def register_init(name: str, fn: InitFn) -> InitFn:
    """Register ``fn(model, **kwargs)`` under ``name``; registering a taken name is an error."""
    if name in _INITS:
        raise ValueError(f"initialiser {name!r} is already registered; registered: {', '.join(list_inits())}")
    _INITS[name] = fn
    return fn


def get_init(init: str | InitFn) -> InitFn:
    """The initialiser registered as ``init``; a callable is returned as is."""
    if callable(init):
        return init
    if init not in _INITS:
        raise ValueError(f"unknown initialiser {init!r}; allowed: {', '.join(list_inits())} or a callable")
    return _INITS[init]


def list_inits() -> list[str]:
    return sorted(_INITS)


def keep_default_(model: nn.Module, **_ignored) -> None:
    """Leave ``model`` as its constructor initialised it (the paper's "Kaiming" baseline)."""
    return None


register_init("dog", dog_init_)
register_init("default", keep_default_)
register_init("kaiming", keep_default_)
# Published depthwise initialisers beside DoG, with dog_init_'s call shape (scale=, include=, exclude=, seed=):
register_init("covariance", covariance_init_)   # Trockman, Willmott & Kolter, ICLR 2023; source= optional
register_init("impulse", impulse_init_)         # Zheng, Li & Lucey, arXiv 2404.01139 (SpatialConv2d_init)
register_init("box", box_init_)
register_init("gaussian", gaussian_init_)
register_init("bank", bank_init_)               # source= required: a filter bank, e.g. the master key filters

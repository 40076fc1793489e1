"""Structured initialisers of depthwise convolutions beside DoG: impulse, box and Gaussian kernels.

Zheng, Li & Lucey, "Structured Initialization for Attention in Vision Transformers" (arXiv 2404.01139; the ViT
version: Zheng, Li, Saratchandran & Lucey, "Structured Initialization for Vision Transformers", NeurIPS 2025, arXiv
2505.19985), motivated by ConvMixers whose depthwise filters are random impulses. Their ConvMixer code
(github.com/osiriszjq/impulse_init ``convmixer.py``; the timm port in osiriszjq/structured_init
``timm/models/convmixer.py``) draws a depthwise layer's C kernels in ``SpatialConv2d_init(C, kernel_size, init)``
with ``init`` one of

* ``"impulse"`` (also ``"box1"``): one tap per channel, uniformly among the k^2, set to ``sqrt(1/3)``;
* ``"box<n>"``: ``n`` distinct taps per channel, uniformly without replacement, each ``sqrt(1 / (3 n))``; their
  runs (``convmixer.sh``: ``box1``, ``box25`` on 5 x 5; timm port: ``box9`` on 3 x 3, ``box25`` on 5 x 5) use one
  tap or every tap;
* ``"gau<v>"``: ``exp(-((p - c_y)^2 + (q - c_x)^2) / (2 v))``, a Gaussian of *variance* ``v`` (so ``sigma =
  sqrt(v)``) at a centre whose two coordinates are uniform integers in [0, k), the layer then divided by one
  factor so that the mean squared kernel norm is 1/3.

All three give the layer the second moment of PyTorch's default init: U(-1/k, 1/k) taps have E[w^2] = 1/(3 k^2),
so a mean squared kernel norm of 1/3, i.e. a root-mean-square weight of ``default_std`` (their ``"random"`` init is
that U(-1/k, 1/k) itself). Their later timm port uses ``sqrt(1/k)`` in place of ``sqrt(1/3)``; pass a float scale
(the kernel L2 norm) to get it. Here ``scale="default"`` reproduces the first: one factor per layer puts its RMS
weight at ``default_std`` (not its centred std, which is 0 for a full box); ``"match"`` puts it at the layer's
current std; ``"unit"`` / a float give every kernel that L2 norm. Taps and centres come from a seeded
``torch.Generator`` (theirs from torch's and numpy's global RNGs), so the kernels follow their distributions, not
their exact draws.

Every initialiser here shares ``dog_init_``'s call shape and rules (``init.plan_depthwise``): the same depthwise
convs (any timm model), summed branches given one kernel per channel between them, weights written through weight
norm, include / exclude, seeds, every argument checked before anything is written, all other tensors untouched.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Iterable, Union

import torch
from torch import nn

from .families import as_int
from .init import InitReport, Scale, plan_depthwise

__all__ = ["impulse_init_", "box_init_", "gaussian_init_", "structured_init_", "scale_block"]

Patterns = Union[str, Iterable[str], None]
# draw(unit index, number of units, kernel size, channels, generator) -> (raw kernels (C, L, L), tag per channel)
Draw = Callable[[int, int, int, int, torch.Generator], "tuple[torch.Tensor, list[str]]"]


def positive_float(value, name: str, allowed: str = "a positive finite number") -> float:
    """``value`` as a float if it is a real number in (0, inf), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < float(value) < math.inf):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def scale_block(raw: torch.Tensor, target: float | None, scale: Scale) -> torch.Tensor:
    """Kernels (C, L, L) rescaled as ``scale`` asks: ``"unit"`` / a float give each kernel that L2 norm;
    ``"default"`` / ``"match"`` multiply the block by one factor so its root-mean-square weight is ``target``."""
    if scale == "unit" or isinstance(scale, float):
        norms = raw.flatten(1).norm(dim=1).clamp_min(torch.finfo(raw.dtype).tiny).reshape(-1, 1, 1)
        return raw / norms * (1.0 if scale == "unit" else scale)
    rms = raw.square().mean().sqrt()
    return raw * (target / rms) if rms > 0 else raw


@torch.no_grad()
def structured_init_(model: nn.Module, draw: Draw, mix: dict[str, float], *, scale: Scale = "default",
                     include: Patterns = None, exclude: Patterns = None, seed: int | None = None) -> InitReport:
    """The shared driver: plan (``init.plan_depthwise``), draw every unit's kernels with ``draw``, scale them
    (``scale_block``), then write them all; an error while drawing leaves the model untouched."""
    plan = plan_depthwise(model, scale=scale, include=include, exclude=exclude, seed=seed)
    sizes = plan.sizes()
    blocks, tags = [], []
    for u, (_, convs) in enumerate(plan.units):
        raw, unit_tags = draw(u, len(plan.units), sizes[u], convs[0].out_channels, plan.generator)
        blocks.append(scale_block(raw.to(torch.float64), plan.targets[u], plan.scale))
        tags.append(unit_tags)
    report = InitReport(plan.model, dict(mix), plan.scale, plan.seed, skipped=plan.skipped)
    report.layers = plan.layers(tags)
    for u, block in enumerate(blocks):
        plan.write_(u, block)
    return report


def impulse_init_(model: nn.Module, *, scale: Scale = "default", include: Patterns = None,
                  exclude: Patterns = None, seed: int | None = None) -> InitReport:
    """Impulse kernels: each channel one tap, uniformly among the k x k, all others zero.

    ``w[c] = a * e_{t_c}``, ``t_c ~ U{0, ..., k^2 - 1}`` (Zheng, Li & Lucey, ``SpatialConv2d_init(init="impulse")``;
    a depthwise conv that shifts each channel by a random offset, cf. their analysis of ConvMixer's spatial mixing as
    attention maps). ``a = sqrt(1/3)`` under ``scale="default"`` (the layer's RMS weight is ``default_std``, as in
    their code); the module docstring has the other scales. Tags: ``"impulse"``.
    """
    def draw(u, n_units, size, channels, generator):
        taps = torch.randint(0, size * size, (channels,), generator=generator)
        raw = torch.zeros(channels, size * size, dtype=torch.float64)
        raw[torch.arange(channels), taps] = 1.0
        return raw.reshape(channels, size, size), ["impulse"] * channels

    return structured_init_(model, draw, {"impulse": 1.0}, scale=scale, include=include, exclude=exclude, seed=seed)


def box_init_(model: nn.Module, taps: int | None = None, *, scale: Scale = "default", include: Patterns = None,
              exclude: Patterns = None, seed: int | None = None) -> InitReport:
    """Box kernels: each channel ``taps`` distinct taps of one equal positive value, the others zero.

    ``w[c] = a * sum_{t in S_c} e_t``, ``S_c`` a uniform random subset of ``taps`` of the k^2 taps (Zheng, Li &
    Lucey, ``SpatialConv2d_init(init="box<n>")``). ``a = sqrt(1 / (3 n))`` under ``scale="default"``.

    taps: an integer in [1, k^2] for every chosen layer (``taps=1`` is the impulse init); None (default) takes all
        k^2 taps, a mean filter, as their registered ConvMixers do (``box9`` for 3 x 3, ``box25`` for 5 x 5).
        A layer whose kernel has fewer than ``taps`` taps is refused before anything is written. Tags: ``"box"``.
    """
    if taps is not None:
        taps = as_int(taps, "taps", "None or an integer >= 1")
        if taps < 1:
            raise ValueError(f"taps must be None (every tap) or an integer >= 1, got {taps!r}")

    def draw(u, n_units, size, channels, generator):
        n = size * size if taps is None else taps
        if n > size * size:
            raise ValueError(f"taps={taps} is more than the {size * size} taps of a {size}x{size} depthwise layer; "
                             f"allowed: 1 to {size * size} (or None for all), or exclude= that layer")
        chosen = torch.rand(channels, size * size, generator=generator).argsort(dim=1)[:, :n]
        raw = torch.zeros(channels, size * size, dtype=torch.float64)
        raw.scatter_(1, chosen, 1.0)
        return raw.reshape(channels, size, size), ["box"] * channels

    return structured_init_(model, draw, {"box": 1.0}, scale=scale, include=include, exclude=exclude, seed=seed)


def gaussian_init_(model: nn.Module, sigma: float = 1.0, *, scale: Scale = "default", include: Patterns = None,
                   exclude: Patterns = None, seed: int | None = None) -> InitReport:
    """Gaussian blobs: each channel a Gaussian of width ``sigma`` (taps) at a random tap of the kernel.

    ``w[c](p, q) = a * exp(-((p - y_c)^2 + (q - x_c)^2) / (2 sigma^2))``, ``y_c, x_c ~ U{0, ..., k - 1}``
    independently (the blob may sit on the border, cut off) (Zheng, Li & Lucey, ``SpatialConv2d_init(init="gau<v>")``
    with variance ``v = sigma^2``; ``sigma=1`` is their ``gau1``). Under ``scale="default"`` one factor ``a`` per
    layer makes the mean squared kernel norm 1/3 (RMS weight ``default_std``), as their code does; ``"unit"`` / a
    float normalise each kernel instead.

    sigma: a positive finite number. Tags: ``"gaussian"``.
    """
    sigma = positive_float(sigma, "sigma", "a positive finite width in taps")

    def draw(u, n_units, size, channels, generator):
        centre = torch.randint(0, size, (channels, 2), generator=generator).to(torch.float64)
        grid = torch.arange(size, dtype=torch.float64)
        dy = (grid.reshape(1, size, 1) - centre[:, 0].reshape(-1, 1, 1)) ** 2
        dx = (grid.reshape(1, 1, size) - centre[:, 1].reshape(-1, 1, 1)) ** 2
        return torch.exp(-(dy + dx) / (2 * sigma ** 2)), ["gaussian"] * channels

    return structured_init_(model, draw, {"gaussian": 1.0}, scale=scale, include=include, exclude=exclude,
                            seed=seed)

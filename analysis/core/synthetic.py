"""Labelled, noisy DoG-family kernels: training material for the bundled classifiers and test material for them.

The parameters are drawn from ranges wider than ``dog_init.PARAMS`` (which are tuned for initialisation), so a
classifier trained here also covers broad centres, large offsets and derivatives up to 20 degrees off-axis. Each kernel is
then corrupted the way trained kernels are: ``gain * (kernel + noise) + offset`` with Gaussian pixel noise whose
norm is ``noise`` times the kernel's (noise drawn per kernel from ``noise_range``).
"""
from __future__ import annotations

import torch

from dog_init import FAMILIES, render, sample_params
from dog_init.families import AxisAngle, Uniform

__all__ = ["WIDE_PARAMS", "CROSS_REACH", "wide_range", "noisy_family_kernels"]

# family -> parameter -> wider range; parameters not listed keep dog_init's defaults.
# Elongation stays below ~1.25 for centre families: a more elongated DoG *is* a second-derivative line detector.
_CENTRE = {"sigma": Uniform(0.45, 1.6), "ratio": Uniform(1.4, 4.0), "surround": Uniform(0.3, 1.2),
           "elongation": Uniform(1.0, 1.25), "dx": Uniform(-0.5, 0.5), "dy": Uniform(-0.5, 0.5)}
_DERIV = {"sigma": Uniform(0.4, 1.5), "surround": Uniform(0.0, 0.8), "elongation": Uniform(1.0, 1.6),
          "dx": Uniform(-0.5, 0.5), "dy": Uniform(-0.5, 0.5)}
_CROSS = {"width": Uniform(0.3, 0.75), "length": Uniform(2.2, 5.0), "peak": Uniform(0.0, 0.6),
          "theta": Uniform(-20.0, 20.0), "dx": Uniform(-0.4, 0.4), "dy": Uniform(-0.4, 0.4)}
_SQUARE = {"half": Uniform(0.55, 1.3), "offset": Uniform(0.5, 1.2), "softness": Uniform(0.05, 0.3)}
WIDE_PARAMS: dict[str, dict[str, Uniform]] = {
    "on_centre": _CENTRE, "off_centre": _CENTRE, "on_cross": _CROSS, "off_cross": _CROSS,
    "first_derivative": {**_DERIV, "theta": AxisAngle(jitter=20.0)},
    "second_derivative": {**_DERIV, "theta": Uniform(-20.0, 20.0)},
    "on_square": _SQUARE, "off_square": _SQUARE,
}


CROSS_REACH = 0.55   # a cross's arms may reach 0.55 k: large trained kernels (and other generators) span the frame


def wide_range(name: str, dist, size: int):
    """``dist``, except that a cross's arm ``length`` may reach ``CROSS_REACH * size`` at sizes >= 11."""
    if name == "length" and CROSS_REACH * size > dist.high:
        return Uniform(dist.low, CROSS_REACH * size)
    return dist


def noisy_family_kernels(n_per_family: int, size: int, *, families=FAMILIES, noise_range=(0.0, 0.5),
                         generator: torch.Generator | None = None, fixed: dict | None = None,
                         return_params: bool = False):
    """``n_per_family`` kernels of each family in ``families``: (n, size, size) float32 and their coarse names.

    fixed: parameter values (scalars or (n_per_family,) tensors) that override the wide draws, e.g. a subtype's
        ``theta``; return_params: also return the parameters of each family's kernels, in ``families`` order.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown family {unknown[0]!r}; allowed: {', '.join(FAMILIES)}")
    lo, hi = noise_range
    chunks, names, params = [], [], []
    for family in families:
        wide = {name: wide_range(name, dist, size).draw(n_per_family, generator)
                for name, dist in WIDE_PARAMS[family].items()}
        p = sample_params(family, n_per_family, generator=generator, **{**wide, **(fixed or {})})
        clean = render(family, size, p)
        level = lo + (hi - lo) * torch.rand(n_per_family, 1, 1, generator=generator)
        noise = torch.randn(clean.shape, generator=generator)
        noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1)
        gain = torch.exp(torch.randn(n_per_family, 1, 1, generator=generator))
        offset = 0.2 * torch.randn(n_per_family, 1, 1, generator=generator)
        chunks.append(gain * (clean + level * noise) / size + offset / size)
        names += [family] * n_per_family
        params.append(p)
    return (torch.cat(chunks), names, params) if return_params else (torch.cat(chunks), names)

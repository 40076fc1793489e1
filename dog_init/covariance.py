"""``covariance_init_``: depthwise kernels drawn from a multivariate Gaussian over their k x k taps.

Trockman, Willmott & Kolter, "Understanding the Covariance Structure of Convolutional Filters", ICLR 2023
(arXiv 2210.03651). Trained depthwise filters (ConvMixer, ConvNeXt) have highly structured tap covariances;
sampling new filters from N(0, Sigma) with Sigma taken from trained filters (Sec. 3), even of a smaller model with
other kernel sizes, initialises a network better than univariate inits, and a closed-form, learning-free Sigma
(Sec. 4) does as well or better.

What we could read: the paper's abstract, introduction and its statement that code is at
github.com/locuslab/convcov (a reproducibility review found that repository empty; our index holds no copy, and no
other public implementation of the construction turned up). Sec. 4's exact formula was not readable to us, so the
closed form below is *our reading* of it: a smooth, stationary Gaussian field over the kernel whose correlation
length grows with depth (the paper's learned covariances widen in deeper layers; its hyper-parameters are an
initial width and a growth with depth).
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Union

import torch
from torch import nn

from .init import InitReport, Scale
from .sources import check_resize, load_source, resize_covariance
from .structured import positive_float, structured_init_

__all__ = ["covariance_init_", "gaussian_covariance", "kernel_covariance", "sample_covariance"]

Patterns = Union[str, Iterable[str], None]


def gaussian_covariance(size: int, sigma: float, centre: bool = False) -> torch.Tensor:
    """(size^2, size^2) float64: ``Sigma[p, q] = exp(-|p - q|^2 / (2 sigma^2))`` over tap positions p, q (row-major);
    ``centre=True`` projects it onto zero-sum kernels, ``P Sigma P`` with ``P = I - 1 1^T / size^2``."""
    grid = torch.arange(size, dtype=torch.float64)
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    d2 = (ys[:, None] - ys[None]) ** 2 + (xs[:, None] - xs[None]) ** 2
    cov = torch.exp(-d2 / (2 * sigma ** 2))
    return _centred(cov) if centre else cov


def kernel_covariance(kernels: torch.Tensor) -> torch.Tensor:
    """The empirical (centred, 1 / (N - 1)) covariance (k^2, k^2) float64 of kernels (N, k, k)."""
    x = kernels.reshape(len(kernels), -1).to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    return x.T @ x / (len(x) - 1)


def _centred(cov: torch.Tensor) -> torch.Tensor:
    n = cov.shape[0]
    p = torch.eye(n, dtype=cov.dtype) - 1.0 / n
    out = p @ cov @ p
    return (out + out.T) / 2


def _factor(cov: torch.Tensor) -> torch.Tensor:
    """A lower Cholesky factor of ``cov + eps I``: ``eps`` from 1e-10 of the mean variance up, until it factors."""
    scale = float(cov.diagonal().mean())
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    for exponent in range(-10, -1):
        factor, info = torch.linalg.cholesky_ex(cov + (10.0 ** exponent) * scale * eye)
        if int(info) == 0:
            return factor
    raise ValueError("the covariance is not positive semi-definite, even with a jitter of 1 % of its mean variance")


def sample_covariance(cov: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` kernels (n, k, k) float64 drawn from N(0, cov) (cov of shape (k^2, k^2)) with a Cholesky factor:
    ``w = L z``, ``z ~ N(0, I)`` from ``generator``."""
    k = int(round(cov.shape[0] ** 0.5))
    z = torch.randn(n, cov.shape[0], generator=generator, dtype=torch.float64)
    return (z @ _factor(cov.to(torch.float64)).T).reshape(n, k, k)


def covariance_init_(model: nn.Module, source=None, *, sigma: float | None = None, growth: float | None = None,
                     centre: bool = False, resize: str | None = "bilinear", scale: Scale = "default",
                     include: Patterns = None, exclude: Patterns = None, seed: int | None = None) -> InitReport:
    """Draw every depthwise kernel from N(0, Sigma) over its k x k taps (Trockman, Willmott & Kolter, ICLR 2023).

    Closed form (``source=None``; our reading of the paper's Sec. 4, see the module docstring): for the layer at
    relative depth ``d = u / (U - 1)`` (``u``-th of ``U`` depthwise units in module order; 0 for a single one),

        Sigma[p, q] = exp(-|p - q|^2 / (2 s^2)),    s = sigma + growth * d,

    with p, q the taps' (row, column) positions: a stationary Gaussian field over the kernel, so neighbouring taps
    correlate with exp(-1 / (2 s^2)) (0.61 at s = 1) and kernels get smoother with depth. Defaults
    ``sigma=1.0``, ``growth=2.0`` (s from 1 tap at the first layer to 3 at the last).

    Transferred (``source=``): a numpy array, torch tensor or ``.npy`` path of kernels (N, k, k) / (N, 1, k, k)
    (e.g. every depthwise kernel of a trained model; all-zero ones are left out), whose centred empirical
    covariance is used, or a saved (k^2, k^2) covariance. One Sigma serves every layer; when a layer's kernel size
    L differs from k it is resized as the paper transfers covariances across kernel sizes: ``R Sigma R^T`` with
    ``R`` the bilinear (``resize="bilinear"``) or bicubic resize of k x k kernels to L x L, which is the resize of
    Sigma as a 4-D (k, k, k, k) tensor and the covariance of the resized kernels (``dog_init.sources``);
    ``resize=None`` refuses a size mismatch instead. ``sigma`` / ``growth`` shape the closed form only and are
    refused with a source.

    centre: project Sigma onto zero-sum kernels (``P Sigma P``, ``P = I - 1 1^T / k^2``), so every kernel's taps
        sum to zero (no response to a flat input).

    Kernels are ``w = L z`` with ``L`` the Cholesky factor of ``Sigma + eps I`` (``eps`` a tiny jitter, from
    1e-10 of the mean variance up, for positive semi-definite Sigma) and ``z ~ N(0, I)`` from the seeded generator;
    then ``scale="default"`` multiplies a layer by one factor so its root-mean-square weight is ``default_std``
    (so only Sigma's shape matters, not its overall size), ``"match"`` to its current std,
    ``"unit"`` / a float set every kernel's L2 norm. The other rules (summed branches, weight norm, include /
    exclude, seed, all checks before any write) are ``dog_init_``'s. Tags: ``"covariance"``.
    """
    if not isinstance(centre, bool):
        raise ValueError(f"centre must be True or False, got {centre!r}")
    resize = check_resize(resize)
    if source is None:
        sigma = 1.0 if sigma is None else positive_float(sigma, "sigma", "a positive finite width in taps")
        growth = 2.0 if growth is None else float(growth) if _nonnegative(growth) else _bad_growth(growth)
        covs: dict = {}

        def cov_for(u, n_units, size):
            s = sigma + growth * (u / (n_units - 1) if n_units > 1 else 0.0)
            key = (size, s)
            if key not in covs:
                covs[key] = gaussian_covariance(size, s, centre)
            return covs[key]
    else:
        given = [f"{name}={value!r}" for name, value in (("sigma", sigma), ("growth", growth)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} shape the closed-form covariance only; with source= the covariance "
                             f"comes from the source (drop {' and '.join(g.split('=')[0] for g in given)})")
        kind, data = load_source(source, "covariance source")
        base = kernel_covariance(data) if kind == "kernels" else data
        k = int(round(base.shape[0] ** 0.5))
        if not float(base.diagonal().max()) > 0:
            raise ValueError("covariance source: the kernels do not vary (their covariance is zero); give kernels "
                             "that differ, or use source=None for the closed form")
        base = _centred(base) if centre else base
        covs = {k: base}

        def cov_for(u, n_units, size):
            if size not in covs:
                if resize is None:
                    raise ValueError(f"covariance source has {k}x{k} kernels but a chosen depthwise layer is "
                                     f"{size}x{size} and resize=None refuses other sizes; pass resize='bilinear' or "
                                     f"'bicubic', or exclude= the {size}x{size} layers")
                covs[size] = resize_covariance(base, size, resize)
            return covs[size]

    def draw(u, n_units, size, channels, generator):
        return sample_covariance(cov_for(u, n_units, size), channels, generator), ["covariance"] * channels

    return structured_init_(model, draw, {"covariance": 1.0}, scale=scale, include=include, exclude=exclude,
                            seed=seed)


def _nonnegative(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and 0 <= float(value) < math.inf


def _bad_growth(value):
    raise ValueError(f"growth must be a finite number >= 0 (how much the width grows from the first to the last "
                     f"layer, in taps), got {value!r}")

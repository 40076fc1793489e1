"""Labelled kernels of the paper's families from a generator that shares nothing with ``dog_init.families``.

Other closed forms and another parameterisation, so a classifier trained on ``dog_init`` kernels is tested on shapes
it was not fitted to (issue 7, item 9). Pixel coordinates: x right, y up, origin at the kernel centre.

=====================  ==============================================================================================
family                 shape
=====================  ==============================================================================================
on / off centre        a Ricker wavelet ("Mexican hat", -Laplacian of a Gaussian) or a plain Gaussian blob (whose
                       centred version is a centre-surround kernel); anisotropic, rotated, offset
first derivative       an odd Gabor ``sin(2 pi u / lambda) exp(-|p|^2 / 2 s^2)`` along an axis +- 15 degrees
second derivative      an even Gabor line ``cos(2 pi u / lambda)`` under an envelope elongated along the line, or a
                       saddle ``u v exp(-|p|^2 / 2 s^2)``; either sign
on / off cross         the union (max) of two orthogonal soft-edged bars, +- 10 degrees
on / off square        2x2 pixels from the centre toward a corner or 3x3 pixels one pixel off it, blurred
=====================  ==============================================================================================

Each kernel then gets white noise of ``U(0, max_noise)`` times its centred norm, a log-normal gain and an offset.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["outside_kernels", "OUTSIDE_FAMILIES", "generated"]

OUTSIDE_FAMILIES = ("on_centre", "off_centre", "first_derivative", "second_derivative", "on_cross", "off_cross",
                    "on_square", "off_square")


def _grid(k: int, rng, jitter: float, angle: float, offset: float):
    c = (k - 1) / 2
    x = np.arange(k) - c
    xx, yy = np.meshgrid(x, -x)      # row 0 is the top, y up
    dx, dy = rng.uniform(-offset, offset, 2)
    t = np.deg2rad(angle + rng.uniform(-jitter, jitter))
    xs, ys = xx - dx, yy - dy
    return xs * np.cos(t) + ys * np.sin(t), -xs * np.sin(t) + ys * np.cos(t)


def _centre(k, rng):
    u, v = _grid(k, rng, 180.0, 0.0, 0.25)   # centred: a blob half a pixel off is a 2x2 square
    s = rng.uniform(0.6, 1.3)
    q = (u / s) ** 2 + (v / (s * rng.uniform(1.0, 1.2))) ** 2
    return (1 - q / 2) * np.exp(-q / 2) if rng.random() < 0.5 else np.exp(-q / 2 * rng.uniform(1.0, 2.0))


def _first(k, rng):
    u, v = _grid(k, rng, 15.0, 90.0 * rng.integers(4), 0.3)
    s, lam = rng.uniform(0.8, 1.5), rng.uniform(4.0, 8.0)
    return np.sin(2 * np.pi * u / lam) * np.exp(-(u**2 + v**2) / (2 * s**2))


def _second(k, rng):
    sign = rng.choice([-1.0, 1.0])
    if rng.random() < 2 / 3:
        u, v = _grid(k, rng, 10.0, 90.0 * rng.integers(2), 0.3)
        lam, su, sv = rng.uniform(3.5, 6.0), rng.uniform(0.7, 1.2), rng.uniform(1.2, 3.0)
        return sign * np.cos(2 * np.pi * u / lam) * np.exp(-u**2 / (2 * su**2) - v**2 / (2 * sv**2))
    u, v = _grid(k, rng, 10.0, 0.0, 0.3)
    s = rng.uniform(0.8, 1.5)
    return sign * u * v * np.exp(-(u**2 + v**2) / (2 * s**2))


def _cross(k, rng):
    u, v = _grid(k, rng, 10.0, 0.0, 0.3)
    half, length, soft = rng.uniform(0.35, 0.6), rng.uniform(1.6, 2.6) * k / 5, rng.uniform(0.1, 0.3)
    bar = lambda a, b: 1 / (1 + np.exp(-(half - np.abs(a)) / soft)) / (1 + np.exp(-(length - np.abs(b)) / soft))  # noqa: E731
    return np.maximum(bar(u, v), bar(v, u))


def _square(k, rng):
    # A block off the centre toward a corner (the paper's 3x3 / 5x5 squares): 2x2 pixels, the centre pixel and its
    # neighbours toward the corner, or 3x3 pixels one pixel off the centre.
    c, w = k // 2, int(rng.choice([2, 3]))
    sx, sy = rng.choice([-1, 1], 2)       # corner: x right (+1) / left, y up (+1) / down (rows grow downward)
    first = (c - 1 + sx, c - 1 - sy) if w == 3 else (c - (sx < 0), c - (sy > 0))
    out = np.zeros((k, k))
    out[first[1]:first[1] + w, first[0]:first[0] + w] = 1.0
    return gaussian_filter(out, rng.uniform(0.0, 0.5), mode="constant")


_SHAPES = {"on_centre": (_centre, 1), "off_centre": (_centre, -1), "first_derivative": (_first, 1),
           "second_derivative": (_second, 1), "on_cross": (_cross, 1), "off_cross": (_cross, -1),
           "on_square": (_square, 1), "off_square": (_square, -1)}


def outside_kernels(n_per_family: int, k: int, *, families=OUTSIDE_FAMILIES, max_noise: float = 0.3,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kernels (n, k, k) float32, coarse labels (n,)) with ``n_per_family`` of each of ``families``."""
    rng = np.random.default_rng(seed)
    kernels, labels = [], []
    for family in families:
        shape, sign = _SHAPES[family]
        for _ in range(n_per_family):
            w = sign * shape(k, rng)
            centred = w - w.mean()
            noise = rng.standard_normal((k, k))
            w = w + rng.uniform(0, max_noise) * np.linalg.norm(centred) * noise / np.linalg.norm(noise)
            kernels.append(np.exp(rng.normal()) * w + rng.normal(0, 0.5) * np.abs(w).mean())
            labels.append(family)
    return np.asarray(kernels, dtype=np.float32), np.asarray(labels)


def generated(k: int, seed: int) -> np.ndarray:
    """Kernels of every family of size k from both generators (dog_init's, through analysis's noisy sampler, and this
    module's), unseen seeds."""
    import torch

    from analysis.core.labels import families_for
    from analysis.core.synthetic import noisy_family_kernels
    ours = noisy_family_kernels(60, k, families=families_for(k), generator=torch.Generator().manual_seed(seed))[0]
    theirs, _ = outside_kernels(60, k, families=[f for f in OUTSIDE_FAMILIES if f in families_for(k)], seed=seed)
    return np.concatenate([ours.numpy(), theirs])

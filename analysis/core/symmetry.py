"""The 16 symmetries of a kernel's clusters: the 8 rotations / reflections of the square (dihedral group D4) and
negation, and how each one renames a cluster.

The paper's clusters come in symmetric sets (Sec. 4): a rotated first derivative is a first derivative pointing
elsewhere, a negated on-centre kernel is an off-centre one. A classifier that is to respect that must give a
transformed kernel the transformed label, which ``KernelClassifier`` does by matching against a codebook closed
under all 16 symmetries (nearest neighbour over a symmetric set is equivariant).

A symmetry ``g = (r, f, s)`` reflects ``x -> -x`` if ``f``, then rotates by ``r`` quarter turns counter-clockwise
(``np.rot90``), then multiplies by ``s = +-1``; with ``x`` right and ``y`` up it moves a feature at ``(x, y)`` to
``M (x, y)``, ``M = R^r F^f`` (``R = [[0, -1], [1, 0]]``, ``F = diag(-1, 1)``). Fine labels follow: directions and
square corners are vectors moved by ``M``; a second derivative ``uu`` / ``vv`` swaps when ``M`` swaps the axes,
``uv`` takes the sign ``M`` gives the product ``x y``; ``s = -1`` swaps on and off and flips every sign.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from dog_init import SQUARE_CORNERS

from .labels import DIRECTIONS

__all__ = ["SYMMETRIES", "transform", "pixel_permutations", "map_fine", "map_coarse", "coarse_of", "symmetry_changes"]

SYMMETRIES: tuple[tuple[int, bool, int], ...] = tuple((r, f, s) for s in (1, -1) for f in (False, True)
                                                      for r in range(4))   # index 0 is the identity
_DIRECTIONS = dict(zip(DIRECTIONS, ((1, 0), (0, 1), (-1, 0), (0, -1))))   # unit vectors
_CORNERS = {"top_right": (1, 1), "top_left": (-1, 1), "bottom_left": (-1, -1), "bottom_right": (1, -1)}
assert tuple(_CORNERS) == SQUARE_CORNERS
_SWAP = {"on": "off", "off": "on"}


def transform(kernels: np.ndarray, g: tuple[int, bool, int]) -> np.ndarray:
    """Kernels (N, k, k) under symmetry ``g`` (a copy)."""
    r, f, s = g
    out = kernels[:, :, ::-1] if f else kernels
    return np.ascontiguousarray(s * np.rot90(out, r, axes=(1, 2)))


@lru_cache(maxsize=None)
def pixel_permutations(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(perm (16, k^2) int64, sign (16,) float32): ``transform(w, g).reshape(-1) == sign[g] * w.reshape(-1)[perm[g]]``
    for the g-th of ``SYMMETRIES``."""
    index = np.arange(k * k, dtype=np.float64).reshape(1, k, k)
    perm = np.stack([transform(index, (r, f, 1)).reshape(-1) for r, f, _ in SYMMETRIES]).astype(np.int64)
    sign = np.array([s for _, _, s in SYMMETRIES], dtype=np.float32)
    perm.setflags(write=False)
    sign.setflags(write=False)
    return perm, sign


def _matrix(g) -> np.ndarray:
    r, f, _ = g
    m = np.diag([-1, 1]) if f else np.eye(2, dtype=int)
    return np.linalg.matrix_power(np.array([[0, -1], [1, 0]]), r) @ m


def _name(table: dict, vector) -> str:
    return next(name for name, v in table.items() if tuple(v) == tuple(int(x) for x in vector))


def map_fine(label: str, g: tuple[int, bool, int]) -> str:
    """The fine label of a kernel of fine label ``label`` after symmetry ``g`` ("other" / "unclustered" stay)."""
    m, negate = _matrix(g), g[2] < 0
    family, _, sub = label.partition("/")
    polarity, _, shape = family.partition("_")
    if polarity in _SWAP and shape in ("centre", "cross", "square"):
        family = f"{_SWAP[polarity] if negate else polarity}_{shape}"
        return family + (f"/{_name(_CORNERS, m @ _CORNERS[sub])}" if sub else "")
    if family == "first_derivative" and sub:
        return f"{family}/{_name(_DIRECTIONS, (-1 if negate else 1) * (m @ _DIRECTIONS[sub]))}"
    if family == "second_derivative" and sub:
        kind, sign = sub[:2], 1 if sub[2] == "+" else -1
        if kind in ("uu", "vv"):
            swapped = m[0, 0] == 0                  # M maps the x axis onto the y axis
            kind = {"uu": "vv", "vv": "uu"}[kind] if swapped else kind
        else:                                        # x y -> (M^-1 p)_x (M^-1 p)_y = +-x y
            inverse = np.linalg.inv(m) @ np.array([1, 1])
            sign *= int(np.sign(inverse[0] * inverse[1]))
        return f"{family}/{kind}{'+' if sign * (-1 if negate else 1) > 0 else '-'}"
    return label


def map_coarse(label: str, g: tuple[int, bool, int]) -> str:
    """The coarse label after symmetry ``g``: negation swaps on and off; the rotations / reflections keep it."""
    return map_fine(label, (0, False, g[2]))


def coarse_of(fine: str) -> str:
    return fine.partition("/")[0]


def symmetry_changes(classify, kernels: np.ndarray) -> dict[str, float]:
    """How far a classifier is from respecting the symmetries, on ``kernels`` (N, k, k).

    ``classify``: kernels -> result with ``labels`` and ``clustered`` (``KernelClassifier.classify``). For each of the
    15 symmetries other than the identity: the share of clustered kernels whose coarse label does not follow
    (``map_coarse``: the same family, on <-> off under negation) or that are no longer clustered, and the share of all
    kernels whose clustered status changes. Returns the worst symmetry's shares and the mean over the 15.
    """
    base = classify(kernels)
    names, at = np.unique(base.labels, return_inverse=True)
    label_changes, status_changes = [], []
    for g in SYMMETRIES[1:]:
        moved = classify(transform(kernels, g))
        expected = np.array([map_coarse(str(name), g) for name in names])[at]
        lost = (moved.labels != expected) | ~moved.clustered
        label_changes.append(float(lost[base.clustered].mean()) if base.clustered.any() else 0.0)
        status_changes.append(float((moved.clustered != base.clustered).mean()) if len(kernels) else 0.0)
    return {"label_changed_max": max(label_changes), "label_changed_mean": float(np.mean(label_changes)),
            "status_changed_max": max(status_changes), "status_changed_mean": float(np.mean(status_changes)),
            "n": len(kernels), "n_clustered": int(base.clustered.sum())}

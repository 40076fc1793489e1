"""Nearest-centroid classification of min-max-encoded kernels (the paper's 3x3 rule, Sec. 3.4), over a centroid set
closed under the 16 symmetries of ``analysis.core.symmetry``.

The min-max encoding ``e(w) = (w - min w) / (max w - min w)`` maps each kernel into [0, 1]. It commutes with the
rotations and reflections (they permute pixels) and turns negation into ``e(-w) = 1 - e(w)``. Closing the centroids
under the permutations and ``c -> 1 - c`` therefore makes the nearest centroid of a transformed kernel the transformed
nearest centroid (Euclidean distances are kept), and the centred cosine to it unchanged: clustered status is
invariant and labels follow ``symmetry.map_fine``. ``kmeans3`` fits the base centroids; ``KernelClassifier`` uses
this module to classify with them. Nothing here imports either.
"""
from __future__ import annotations

import numpy as np

from ..core.preprocess import check_kernels, degenerate, to_basis
from ..core.symmetry import SYMMETRIES, map_fine, pixel_permutations

__all__ = ["minmax_encode", "close_centroids", "assign_centroids"]


def minmax_encode(kernels) -> np.ndarray:
    """(N, k*k): each kernel affinely mapped to [0, 1]; constant or non-finite kernels become all 0.5."""
    arr = check_kernels(kernels)
    flat = arr.reshape(len(arr), -1).astype(np.float32, copy=True)
    bad = degenerate(arr)
    flat[bad] = 0.0
    lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = (flat - lo) / span
    out[bad] = 0.5
    return out


def close_centroids(centroids: np.ndarray, fine) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(closed centroids (M, k*k), fine labels (M,), base centroid (M,), symmetry index (M,)): every centroid under
    every symmetry (centroid ``base[i]`` moved by ``SYMMETRIES[symmetry[i]]``), identity copies first, exact repeats
    (a rotation-invariant centre, say) kept once."""
    centroids = np.asarray(centroids, dtype=np.float32)
    k = int(round(np.sqrt(centroids.shape[1])))
    perm, _ = pixel_permutations(k)
    out, labels = [], []
    for g, (r, f, s) in enumerate(SYMMETRIES):
        moved = centroids[:, perm[g]]
        out.append(1.0 - moved if s < 0 else moved)
        labels += [map_fine(str(label), (r, f, s)) for label in fine]
    out, labels = np.concatenate(out), np.asarray(labels)
    base = np.tile(np.arange(len(centroids)), len(SYMMETRIES))
    symmetry = np.repeat(np.arange(len(SYMMETRIES)), len(centroids))
    _, first = np.unique(np.round(out, 5), axis=0, return_index=True)
    keep = np.sort(first)
    return np.ascontiguousarray(out[keep]), labels[keep], base[keep], symmetry[keep]


def assign_centroids(arr: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (M, k*k) in min-max space, and the centred cosine similarity to it, for each kernel."""
    enc = minmax_encode(arr)
    d2 = (enc**2).sum(1, keepdims=True) - 2 * enc @ centroids.T + (centroids**2).sum(1)
    best = d2.argmin(axis=1)
    k = arr.shape[-1]
    codebook = to_basis(centroids.reshape(-1, k, k))
    similarity = np.einsum("nd,nd->n", to_basis(arr), codebook[best]).astype(np.float32)
    return best, similarity

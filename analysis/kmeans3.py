"""3x3 kernels (Sec. 3.4): k-means with 10 classes on min-max-encoded kernels, behind the ``KernelClassifier`` API.

A 3x3 kernel has too few pixels for the autoencoder spectrum, so the paper clusters min-max encodings
``(w - min w) / (max w - min w)`` (each kernel mapped into [0, 1], sign kept) with k-means. A kernel belongs to the
nearest centroid in that space; it is *clustered* iff the centred cosine dissimilarity to that centroid is below the
threshold. Centroids are named with the same ``dog_init`` template bank as the autoencoder intervals.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from .labels import match_templates
from .preprocess import check_kernels, degenerate, to_basis

__all__ = ["minmax_encode", "fit_kmeans3", "classifier_from_centroids", "assign_centroids"]


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


def fit_kmeans3(kernels, *, n_classes: int = 10, seed: int = 0, threshold: float | None = None,
                min_similarity: float = 0.75, meta: dict | None = None):
    """Fit k-means on the non-degenerate kernels' min-max encodings and return a named ``KernelClassifier``."""
    arr = check_kernels(kernels)
    good = arr[~degenerate(arr)]
    if len(good) < n_classes:
        raise ValueError(f"need at least {n_classes} non-degenerate kernels for k-means, got {len(good)}")
    km = KMeans(n_clusters=n_classes, n_init=10, random_state=seed).fit(minmax_encode(good))
    centroids = km.cluster_centers_.astype(np.float32)
    k = arr.shape[-1]
    names, fine, _ = match_templates(centroids.reshape(-1, k, k), min_similarity=min_similarity)
    meta = {**(meta or {}), "n_classes": n_classes, "seed": seed, "min_similarity": min_similarity,
            "inertia": float(km.inertia_)}
    return classifier_from_centroids(centroids, names, fine, threshold=threshold, meta=meta)


def classifier_from_centroids(centroids, names, fine, *, threshold=None, meta=None):
    from .classifier import KernelClassifier

    centroids = np.asarray(centroids, dtype=np.float32)
    k = int(round(np.sqrt(centroids.shape[1])))
    codebook = to_basis(centroids.reshape(-1, k, k))   # centred unit directions of the centroids
    return KernelClassifier(k, codebook, names, fine, threshold=threshold, kind="kmeans", meta=meta,
                            centroids=centroids)


def assign_centroids(arr: np.ndarray, centroids: np.ndarray, codebook: np.ndarray):
    """Nearest centroid in min-max space, and the centred cosine similarity to it, for each kernel."""
    enc = minmax_encode(arr)
    d2 = (enc**2).sum(1, keepdims=True) - 2 * enc @ centroids.T + (centroids**2).sum(1)
    best = d2.argmin(axis=1)
    similarity = np.einsum("nd,nd->n", to_basis(arr), codebook[best]).astype(np.float32)
    return best, similarity

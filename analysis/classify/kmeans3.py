"""3x3 kernels (Sec. 3.4): k-means with 10 classes on min-max-encoded kernels, behind the ``KernelClassifier`` API.

A 3x3 kernel has too few pixels for the autoencoder spectrum, so the paper clusters min-max encodings
``(w - min w) / (max w - min w)`` (each kernel mapped into [0, 1], sign kept) with k-means. A kernel belongs to the
nearest centroid in that space; it is *clustered* iff the centred cosine dissimilarity to that centroid is below the
threshold. Centroids are named with the same ``dog_init`` template bank as the autoencoder intervals; the classifier
closes them under the 16 symmetries of ``analysis.core.symmetry`` (``centroids.close_centroids``). Imports go one way:
this module uses ``centroids`` and ``classifier``, neither of which imports it.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from ._centroids import assign_centroids, minmax_encode
from .classifier import KernelClassifier
from ..core.labels import match_templates
from ..core.preprocess import check_kernels, degenerate

__all__ = ["minmax_encode", "fit_kmeans3", "classifier_from_centroids", "assign_centroids"]


def fit_kmeans3(kernels, *, n_classes: int = 10, seed: int = 0, threshold: float | None = None,
                min_similarity: float = 0.75, meta: dict | None = None) -> KernelClassifier:
    """Fit k-means on the non-degenerate kernels' min-max encodings and return a named ``KernelClassifier``."""
    arr = check_kernels(kernels)
    good = arr[~degenerate(arr)]
    distinct = len(np.unique(np.round(minmax_encode(good), 5), axis=0)) if len(good) else 0
    if distinct < n_classes:
        raise ValueError(f"need at least {n_classes} distinct non-degenerate kernels for {n_classes}-class k-means, got "
                         f"{distinct} (of {len(arr)} kernels)")
    km = KMeans(n_clusters=n_classes, n_init=10, random_state=seed).fit(minmax_encode(good))
    centroids = km.cluster_centers_.astype(np.float32)
    k = arr.shape[-1]
    names, fine, _ = match_templates(centroids.reshape(-1, k, k), min_similarity=min_similarity)
    meta = {**(meta or {}), "n_classes": n_classes, "seed": seed, "min_similarity": min_similarity,
            "inertia": float(km.inertia_)}
    return KernelClassifier.from_centroids(centroids, names, fine, threshold=threshold, meta=meta)


def classifier_from_centroids(centroids, names, fine, *, threshold=None, meta=None) -> KernelClassifier:
    """``KernelClassifier.from_centroids`` (kept for callers of the earlier name)."""
    return KernelClassifier.from_centroids(centroids, names, fine, threshold=threshold, meta=meta)

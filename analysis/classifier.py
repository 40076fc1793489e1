"""Kernel classification through a decoded codebook (Sec. 3.3) or, for 3x3 kernels, k-means centroids (Sec. 3.4).

Autoencoder classifiers decode ``n_codes`` (10,000) uniformly spaced codes in [0, 1] into a codebook of centred,
unit-norm kernels. A kernel takes the code of highest cosine similarity (chunked matrix products, no Python loop
over kernels; ``search.CodebookIndex`` gives the brute-force answer at a fraction of the cost) and is *clustered* iff its cosine dissimilarity ``1 - max cos`` is below the size's threshold (0.3 for
7x7, 0.2 for 5x5, Sec. 4); its name is that of the labelled interval its code falls in. 3x3 classifiers assign
each min-max-encoded kernel to the nearest of 10 k-means centroids (``kmeans3``) and apply the same threshold rule to
the centred cosine dissimilarity to that centroid. Degenerate kernels (constant or non-finite) are "unclustered".
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dog_init.preview import atomic_path

from .autoencoder import KernelAutoencoder
from .labels import LABELS, UNCLUSTERED, Interval, check_intervals, label_codes, match_templates, \
    spectrum_intervals
from .preprocess import basis, check_kernels, degenerate
from .search import CodebookIndex

__all__ = ["KernelClassifier", "ClassificationResult", "DEFAULT_THRESHOLDS", "FORMAT_VERSION",
           "available_pretrained"]

# Cosine dissimilarity. 5 and 7 from Sec. 4 (larger k use 0.3); 3x3 has only 8 free dimensions, where 0.12 keeps
# random kernels below 1 % clustered against 10 centroids.
DEFAULT_THRESHOLDS = {3: 0.12, 5: 0.2, 7: 0.3}
FORMAT_VERSION = 1
_WEIGHTS = "weights"


def default_threshold(size: int) -> float:
    return DEFAULT_THRESHOLDS.get(size, 0.3)


@dataclass
class ClassificationResult:
    labels: np.ndarray          # (N,) str: a family, "other" or "unclustered"
    fine_labels: np.ndarray     # (N,) str: subtype ("first_derivative/up", ...), "other" or "unclustered"
    clustered: np.ndarray       # (N,) bool
    dissimilarity: np.ndarray   # (N,) float32 in [0, 2]; NaN for degenerate kernels
    codes: np.ndarray           # (N,) float32: code in [0, 1] (autoencoder) or centroid index (k-means); NaN if degenerate
    degenerate: np.ndarray      # (N,) bool

    def __len__(self) -> int:
        return len(self.labels)

    def proportions(self) -> dict[str, float]:
        """Share of *all* kernels (degenerate included) per name, for every name in ``labels.LABELS``."""
        counts = Counter(self.labels.tolist())
        n = max(len(self), 1)
        return {name: counts.get(name, 0) / n for name in LABELS}

    def clustered_share(self) -> float:
        return float(self.clustered.mean()) if len(self) else 0.0

    def subset(self, mask) -> "ClassificationResult":
        return ClassificationResult(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))


class KernelClassifier:
    """Classify k x k depthwise kernels into the paper's clusters. Build with ``pretrained``, ``load``,
    ``from_autoencoder`` or ``from_kmeans`` (``kmeans3``); see the module docstring for the rule."""

    def __init__(self, size: int, codebook: np.ndarray, names, fine, *, threshold: float | None = None,
                 kind: str = "autoencoder", meta: dict | None = None, autoencoder: KernelAutoencoder | None = None,
                 intervals: list[Interval] | None = None, centroids: np.ndarray | None = None):
        self.size, self.kind = size, kind
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)  # (M, k*k - 1), unit rows
        self.names, self.fine = np.asarray(names), np.asarray(fine)
        self.threshold = default_threshold(size) if threshold is None else float(threshold)
        self.meta = dict(meta or {})
        self.autoencoder, self.intervals, self.centroids = autoencoder, intervals, centroids

    def __repr__(self) -> str:
        return (f"KernelClassifier(size={self.size}, kind={self.kind!r}, entries={len(self.codebook)}, "
                f"threshold={self.threshold})")

    # --- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_autoencoder(cls, model: KernelAutoencoder, *, threshold: float | None = None,
                         intervals: list[Interval] | None = None, n_codes: int = 10_000, n_spectrum: int = 500,
                         min_similarity: float = 0.75, meta: dict | None = None) -> "KernelClassifier":
        """Decode the codebook; name intervals automatically from the ``n_spectrum``-code spectrum unless given."""
        model = model.eval().cpu()
        if intervals is None:
            codes, kernels = _decode(model, n_spectrum)
            names, fine, _ = match_templates(kernels, min_similarity=min_similarity)
            intervals = spectrum_intervals(codes, names, fine)
        check_intervals(intervals)
        codes, kernels = _decode(model, n_codes)
        coords = _unit(kernels.reshape(n_codes, -1) @ basis(model.size))
        names, fine = label_codes(codes, intervals)
        meta = {**(meta or {}), "n_codes": n_codes, "n_spectrum": n_spectrum, "min_similarity": min_similarity}
        return cls(model.size, coords, names, fine, threshold=threshold, kind="autoencoder", meta=meta,
                   autoencoder=model, intervals=intervals)

    @classmethod
    def pretrained(cls, size: int = 7) -> "KernelClassifier":
        """The classifier for ``size`` x ``size`` kernels shipped in ``analysis/weights`` (see ``make classifiers``)."""
        sizes = available_pretrained()
        if size not in sizes:
            raise ValueError(f"no bundled classifier for {size}x{size} kernels; available sizes: {sizes}. Train one "
                             f"with: python -m analysis fit --kernels FILE.npy ... --size {size} --out DIR")
        return cls.load(resources.files("analysis") / _WEIGHTS / f"classifier_k{size}.safetensors")

    @classmethod
    def load(cls, path) -> "KernelClassifier":
        """Load ``NAME.safetensors`` and its metadata ``NAME.json`` (written by ``save``)."""
        path = Path(str(path))
        if path.is_dir():
            found = sorted(path.glob("classifier_k*.safetensors"))
            if len(found) != 1:
                raise ValueError(f"{str(path)!r} holds {len(found)} classifier_k*.safetensors files; name one")
            path = found[0]
        meta_path = path.with_suffix(".json")
        for p in (path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"classifier file {str(p)!r} not found")
        try:
            meta = json.loads(meta_path.read_text())
            tensors = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"cannot read classifier {str(path)!r}: {err}") from None
        if meta.get("format") != "dog-init-classifier" or meta.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{str(meta_path)!r} is not a dog-init classifier of version <= {FORMAT_VERSION}")
        size, threshold = int(meta["size"]), float(meta["threshold"])
        if meta["kind"] == "kmeans":
            from .kmeans3 import classifier_from_centroids
            return classifier_from_centroids(tensors["centroids"].numpy(), meta["names"], meta["fine"],
                                             threshold=threshold, meta=meta)
        with torch.random.fork_rng(devices=[]):   # the layers' random initial weights are overwritten at once
            model = KernelAutoencoder(size, meta["widths"], meta["negative_slope"])
        model.load_state_dict(tensors)
        intervals = [Interval(**iv) for iv in meta["intervals"]]
        return cls.from_autoencoder(model, threshold=threshold, intervals=intervals, n_codes=meta["n_codes"],
                                    n_spectrum=meta["n_spectrum"], min_similarity=meta["min_similarity"],
                                    meta=meta)

    def save(self, path) -> Path:
        """Write ``path`` (.safetensors) and the metadata beside it (.json), each atomically."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"classifier path must end in .safetensors, got {str(path)!r}")
        meta = {**self.meta, "format": "dog-init-classifier", "version": FORMAT_VERSION, "kind": self.kind,
                "size": self.size, "threshold": self.threshold}
        if self.kind == "kmeans":
            tensors = {"centroids": torch.from_numpy(np.ascontiguousarray(self.centroids))}
            meta.update(names=self.names.tolist(), fine=self.fine.tolist())
        else:
            tensors = {k: v.contiguous() for k, v in self.autoencoder.state_dict().items()}
            meta.update(widths=list(self.autoencoder.widths),
                        negative_slope=self.autoencoder.encoder[1].negative_slope,
                        intervals=[iv.__dict__ for iv in self.intervals])
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        return path

    # --- use ----------------------------------------------------------------------------------------------------
    def spectrum(self, n: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes (n,), decoded centred unit kernels (n, k, k), names (n,)): the reconstruction spectrum (Fig. 3)."""
        if self.autoencoder is None:
            raise ValueError("a k-means classifier has no spectrum; use .centroids")
        codes, kernels = _decode(self.autoencoder, n)
        return codes, kernels, label_codes(codes, self.intervals)[0]

    @property
    def index(self) -> CodebookIndex:
        """The exact nearest-entry search over the codebook (built on first use)."""
        if getattr(self, "_index", None) is None:
            self._index = CodebookIndex(self.codebook, basis(self.size))
        return self._index

    def classify(self, kernels, *, chunk: int = 4096) -> ClassificationResult:
        """Classify kernels (N, k, k) (ndarray or tensor); see the module docstring for the rule."""
        arr = _as_kernels(kernels, self.size)
        n = len(arr)
        bad = degenerate(arr) if n else np.zeros(0, bool)
        best = np.zeros(n, dtype=np.int64)
        similarity = np.zeros(n, dtype=np.float32)
        if n and self.kind == "kmeans":
            from .kmeans3 import assign_centroids
            best, similarity = assign_centroids(arr, self.centroids, self.codebook)
        elif n:
            index, score = self.index.nearest(torch.from_numpy(arr.reshape(n, -1)), chunk=chunk)
            best, similarity = index.numpy(), score.numpy()
        dissimilarity = (1.0 - similarity).astype(np.float32)
        dissimilarity[bad] = np.nan
        clustered = ~bad & (dissimilarity < self.threshold)
        labels = np.where(clustered, self.names[best], UNCLUSTERED)
        fine = np.where(clustered, self.fine[best], UNCLUSTERED)
        codes = (best / (len(self.codebook) - 1) if self.kind == "autoencoder" else best).astype(np.float32)
        codes[bad] = np.nan
        return ClassificationResult(labels, fine, clustered, dissimilarity, codes, bad)


def available_pretrained() -> list[int]:
    folder = resources.files("analysis") / _WEIGHTS
    return sorted(int(p.name[len("classifier_k"):-len(".safetensors")]) for p in folder.iterdir()
                  if p.name.startswith("classifier_k") and p.name.endswith(".safetensors"))


def _as_kernels(kernels, size: int) -> np.ndarray:
    if hasattr(kernels, "detach"):
        kernels = kernels.detach().cpu().float().numpy()
    arr = np.asarray(kernels, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 0:
        if arr.shape[1:] != (size, size):
            raise ValueError(f"expected kernels of shape (N, {size}, {size}), got {arr.shape}")
        return arr
    arr = check_kernels(arr)
    if arr.shape[-1] != size:
        raise ValueError(f"this classifier takes {size}x{size} kernels, got {arr.shape[-1]}x{arr.shape[-1]}; "
                         f"use KernelClassifier.pretrained({arr.shape[-1]}) or fit one")
    return arr


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _decode(model: KernelAutoencoder, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``linspace(0, 1, n)`` and their decoded centred unit-norm kernels (n, k, k)."""
    codes = torch.linspace(0, 1, n)
    with torch.no_grad():
        coords = model.decode(codes).double().numpy()
    kernels = _unit(coords) @ basis(model.size).T.astype(np.float64)
    return codes.numpy(), kernels.reshape(n, model.size, model.size).astype(np.float32)

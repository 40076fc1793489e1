"""Kernel classification through a decoded codebook (Sec. 3.3) or, for 3x3 kernels, k-means centroids (Sec. 3.4).

Autoencoder classifiers decode ``n_codes`` (10,000) uniformly spaced codes in [0, 1] into a codebook of centred,
unit-norm kernels. A kernel takes the entry of highest cosine similarity and is *clustered* iff its cosine
dissimilarity ``1 - max cos`` is below the size's threshold (0.3 for 7x7, 0.2 for 5x5, Sec. 4); its name is that of
the labelled interval the entry's code falls in. 3x3 classifiers assign each min-max-encoded kernel to the nearest
k-means centroid (``kmeans3``) and apply the same threshold rule to the centred cosine dissimilarity to that centroid.
Degenerate kernels (constant or non-finite) are "unclustered".

Symmetric (the default): the clusters come in symmetric sets (a rotated first derivative points elsewhere, a negated
on-centre kernel is off-centre), so the entries are closed under the 8 rotations / reflections of the square and
negation (``analysis.core.symmetry``): every 16th decoded code (625 of 10,000) under all 16 symmetries, or every k-means
centroid under all of them (``centroids.close_centroids``), an entry ``g c`` named ``symmetry.map_fine(name of c, g)``.
Nearest neighbour over a symmetric set is equivariant: a kernel's clustered status and dissimilarity do not depend on
which of its 16 versions is classified, and its labels transform with it (right -> up under a quarter turn, on <-> off
under negation). ``symmetric=False`` is the paper's plain rule (``search.CodebookIndex``, all 10,000 codes).

Sizes above the largest bundled one (13x13) have no trained classifier of their own: ``pretrained(k)`` returns the
13x13 one behind the size-free window rule of ``analysis.classify.windows`` (kind ``"windowed"``). From 9x9 on,
``pretrained(k)`` also names a kernel whose weights lie in its central 5x5 or 7x7 window (>= ``CENTRAL_SHARE`` of
the sum of squared weights) by that window, with the 5x5 / 7x7 classifier (``inner``): a kernel's family does not
depend on the zeros around it (a real 5x5 kernel zero-padded into 9x9 keeps its name). Squares, which have no
family above 5x5, are then named as the centre family of their sign (an off-centre blob).
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

from dog_init.files import atomic_path, strict_json

from .autoencoder import KernelAutoencoder
from ._centroids import assign_centroids, close_centroids
from ..core.labels import LABELS, UNCLUSTERED, Interval, check_intervals, label_codes, match_templates, \
    spectrum_intervals
from ..core.preprocess import basis, check_kernels, degenerate, to_basis
from ._search import CodebookIndex, SymmetricIndex
from ..core.symmetry import SYMMETRIES, coarse_of, map_coarse, map_fine
from .windows import window_choice, window_sizes, window_views

__all__ = ["KernelClassifier", "ClassificationResult", "DEFAULT_THRESHOLDS", "FORMAT_VERSION",
           "available_pretrained"]

# Cosine dissimilarity. 5 and 7 from Sec. 4 (larger k use 0.3); 3x3 has only 8 free dimensions, where 0.1 keeps
# random kernels below 1 % clustered against the 10 k-means centroids closed under the 16 symmetries.
DEFAULT_THRESHOLDS = {3: 0.1, 5: 0.2, 7: 0.3}
SYMMETRIC_BASE = 625    # decoded codes whose 16 symmetric versions form a symmetric codebook (as many as 10,000 / 16)
FORMAT_VERSION = 1
_WEIGHTS = "weights"
_SAVED_KEYS = ("format", "version", "kind", "size", "threshold", "symmetric")
CENTRAL_SHARE = 0.99   # share of a kernel's squared weights inside a central window for that window to name it
_FOLDED = {"on_square": "on_centre", "off_square": "off_centre"}


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
    symmetry: np.ndarray        # (N,) int8: index into symmetry.SYMMETRIES of g, the match being g (entry); -1 degenerate

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
    ``from_autoencoder`` or ``from_centroids`` (``kmeans3``); see the module docstring for the rule."""

    def __init__(self, size: int, codebook: np.ndarray, names, fine, *, threshold: float | None = None,
                 kind: str = "autoencoder", meta: dict | None = None, autoencoder: KernelAutoencoder | None = None,
                 intervals: list[Interval] | None = None, centroids: np.ndarray | None = None,
                 symmetric: bool = True, base: "KernelClassifier | None" = None):
        self.size, self.kind, self.symmetric = size, kind, bool(symmetric)
        self.base = base   # kind "windowed": the classifier that names every window view
        self.inner: list[KernelClassifier] = []   # smaller classifiers for kernels held in a central window
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)  # (M, k*k - 1), unit rows
        self.names, self.fine = np.asarray(names), np.asarray(fine)
        self.threshold = default_threshold(size) if threshold is None else float(threshold)
        self.meta = dict(meta or {})
        self.autoencoder, self.intervals, self.centroids = autoencoder, intervals, centroids

    def __repr__(self) -> str:
        return (f"KernelClassifier(size={self.size}, kind={self.kind!r}, entries={len(self.codebook)}, "
                f"threshold={self.threshold}, symmetric={self.symmetric})")

    # --- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_autoencoder(cls, model: KernelAutoencoder, *, threshold: float | None = None,
                         intervals: list[Interval] | None = None, n_codes: int = 10_000, n_spectrum: int = 500,
                         min_similarity: float = 0.75, meta: dict | None = None,
                         symmetric: bool = True) -> "KernelClassifier":
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
                   autoencoder=model, intervals=intervals, symmetric=symmetric)

    @classmethod
    def from_centroids(cls, centroids, names, fine, *, threshold: float | None = None, meta: dict | None = None,
                       symmetric: bool = True) -> "KernelClassifier":
        """A 3x3-style classifier from min-max-space centroids (K, k*k) and their names (see ``kmeans3``)."""
        centroids = np.asarray(centroids, dtype=np.float32)
        k = int(round(np.sqrt(centroids.shape[1])))
        codebook = to_basis(centroids.reshape(-1, k, k))   # centred unit directions of the centroids
        return cls(k, codebook, names, fine, threshold=threshold, kind="kmeans", meta=meta, centroids=centroids,
                   symmetric=symmetric)

    @classmethod
    def windowed(cls, base: "KernelClassifier", size: int) -> "KernelClassifier":
        """``base`` applied to ``size`` x ``size`` kernels through the window rule (``analysis.classify.windows``):
        same families, threshold, symmetry and result type as ``base``."""
        if base.base is not None:
            base = base.base
        widths = window_sizes(size, base.size)
        meta = {"rule": f"windows {widths} of the {size}x{size} kernel, each area-averaged to {base.size}x{base.size}"
                        f" and named by the {base.size}x{base.size} classifier; the least dissimilar view counts "
                        "(analysis.classify.windows)", "windows": widths, "base_size": base.size,
                "base": {key: value for key, value in base.meta.items() if key in ("trained_on", "evaluation")}}
        return cls(size, base.codebook, base.names, base.fine, threshold=base.threshold, kind="windowed", meta=meta,
                   autoencoder=base.autoencoder, intervals=base.intervals, centroids=base.centroids,
                   symmetric=base.symmetric, base=base)

    @classmethod
    def pretrained(cls, size: int = 7) -> "KernelClassifier":
        """The classifier for ``size`` x ``size`` kernels shipped in ``analysis/weights`` (see ``make classifiers``);
        any odd size above the largest bundled one gets that one through the window rule (``windowed``)."""
        sizes = available_pretrained()
        if size in sizes or isinstance(size, (int, np.integer)) and size % 2 == 1 and size > max(sizes):
            clf = (cls.load(resources.files("analysis") / _WEIGHTS / f"classifier_k{size}.safetensors")
                   if size in sizes else cls.windowed(cls.pretrained(max(sizes)), int(size)))
            if size >= 9:
                clf.inner = [cls.pretrained(w) for w in (5, 7) if w in sizes]
                clf.meta["central_rule"] = (f"a kernel with >= {CENTRAL_SHARE:.0%} of its squared weights in its "
                                            "central 5x5 (else 7x7) window is named by that window's classifier")
            return clf
        raise ValueError(f"no bundled classifier for {size}x{size} kernels; available sizes: {sizes} and every odd "
                         f"size above {max(sizes)}. Train one with: python -m analysis fit --kernels FILE.npy ... "
                         f"--size {size} --out DIR")

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
        if meta["kind"] == "windowed":
            clf = cls.windowed(cls._from_saved(meta["base"], tensors), int(meta["size"]))
            clf.meta.update({k: v for k, v in meta.items() if k not in clf.meta and k not in _SAVED_KEYS})
            return clf
        return cls._from_saved(meta, tensors)

    @classmethod
    def _from_saved(cls, meta: dict, tensors: dict) -> "KernelClassifier":
        size, threshold = int(meta["size"]), float(meta["threshold"])
        symmetric = bool(meta.get("symmetric", True))   # files from before the symmetric rule get it too
        if meta["kind"] == "kmeans":
            return cls.from_centroids(tensors["centroids"].numpy(), meta["names"], meta["fine"], threshold=threshold,
                                      meta=meta, symmetric=symmetric)
        with torch.random.fork_rng(devices=[]):   # the layers' random initial weights are overwritten at once
            model = KernelAutoencoder(size, meta["widths"], meta["negative_slope"])
        model.load_state_dict(tensors)
        intervals = [Interval(**iv) for iv in meta["intervals"]]
        return cls.from_autoencoder(model, threshold=threshold, intervals=intervals, n_codes=meta["n_codes"],
                                    n_spectrum=meta["n_spectrum"], min_similarity=meta["min_similarity"],
                                    meta=meta, symmetric=symmetric)

    def save(self, path) -> Path:
        """Write ``path`` (.safetensors) and the metadata beside it (.json), each atomically."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"classifier path must end in .safetensors, got {str(path)!r}")
        tensors, meta = self._saved()
        text = strict_json(meta, indent=1)   # before any file is written
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(text)
        return path

    def _saved(self) -> tuple[dict, dict]:
        """(tensors, metadata) of ``save``; a windowed classifier stores its base's, with the base's metadata."""
        if self.base is not None:
            tensors, base_meta = self.base._saved()
            return tensors, {**self.meta, "base": base_meta, "format": "dog-init-classifier",
                             "version": FORMAT_VERSION, "kind": self.kind, "size": self.size}
        meta = {**self.meta, "format": "dog-init-classifier", "version": FORMAT_VERSION, "kind": self.kind,
                "size": self.size, "threshold": self.threshold, "symmetric": self.symmetric}
        if self.kind == "kmeans":
            tensors = {"centroids": torch.from_numpy(np.ascontiguousarray(self.centroids))}
            meta.update(names=self.names.tolist(), fine=self.fine.tolist())
        else:
            tensors = {k: v.contiguous() for k, v in self.autoencoder.state_dict().items()}
            meta.update(widths=list(self.autoencoder.widths),
                        negative_slope=self.autoencoder.encoder[1].negative_slope,
                        intervals=[iv.__dict__ for iv in self.intervals])
        return tensors, meta

    # --- use ----------------------------------------------------------------------------------------------------
    def spectrum(self, n: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes (n,), decoded centred unit kernels (n, k, k), names (n,)): the reconstruction spectrum (Fig. 3);
        a windowed classifier's is its base's (k = the base size)."""
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

    def _closed_entries(self) -> tuple:
        """The closed codebook (built on first use). k-means: (centroids, names, fine, base centroid, symmetry) of
        every centroid under every symmetry. Autoencoder: (its exact search, base entries, name and fine label
        tables (16, K)) for every ``len(codebook) // SYMMETRIC_BASE``-th code under every symmetry."""
        if getattr(self, "_symmetric", None) is None:
            if self.kind == "kmeans":
                closed, fine, base, symmetry = close_centroids(self.centroids, self.fine)
                self._symmetric = (closed, np.array([coarse_of(f) for f in fine]), fine, base, symmetry)
            else:
                step = max(1, len(self.codebook) // SYMMETRIC_BASE)
                base = np.arange(step // 2, len(self.codebook), step)
                entries = self.codebook[base] @ basis(self.size).T
                # Labels of g (entry) for every symmetry g, looked up per distinct label rather than per entry.
                names, name_of = np.unique(self.names[base], return_inverse=True)
                fines, fine_of = np.unique(self.fine[base], return_inverse=True)
                name_table = np.array([[map_coarse(str(x), g) for x in names] for g in SYMMETRIES])
                fine_table = np.array([[map_fine(str(x), g) for x in fines] for g in SYMMETRIES])
                self._symmetric = (SymmetricIndex(entries, self.size), base, name_table[:, name_of],
                                   fine_table[:, fine_of])
        return self._symmetric

    def classify(self, kernels, *, chunk: int = 4096) -> ClassificationResult:
        """Classify kernels (N, k, k) (ndarray or tensor); see the module docstring for the rule."""
        arr = _as_kernels(kernels, self.size)
        result = self._classify_windows(arr, chunk) if self.base is not None else self._classify_own(arr, chunk)
        return self._central(kernels, result, chunk) if self.inner and len(arr) else result

    def _classify_own(self, arr: np.ndarray, chunk: int) -> ClassificationResult:
        n = len(arr)
        bad = degenerate(arr) if n else np.zeros(0, bool)
        best = np.zeros(n, dtype=np.int64)       # entry of the plain codebook / centroid whose version matched
        symmetry = np.zeros(n, dtype=np.int8)
        similarity = np.zeros(n, dtype=np.float32)
        names, fine = self.names[best], self.fine[best]
        if n and self.kind == "kmeans":
            closed, closed_names, closed_fine, base, moved = self._closed_entries() if self.symmetric else (
                self.centroids, self.names, self.fine, np.arange(len(self.centroids)), np.zeros(len(self.names)))
            match, similarity = assign_centroids(arr, closed)
            best, names, fine, symmetry = base[match], closed_names[match], closed_fine[match], moved[match].astype(
                np.int8)
        elif n and self.symmetric:
            index, base, name_table, fine_table = self._closed_entries()
            at, g, score = index.nearest(torch.from_numpy(arr.reshape(n, -1)), chunk=min(chunk, 2048))
            at, g = at.numpy(), g.numpy()
            best, symmetry, similarity = base[at], g.astype(np.int8), score.numpy()
            names, fine = name_table[g, at], fine_table[g, at]
        elif n:
            index, score = self.index.nearest(torch.from_numpy(arr.reshape(n, -1)), chunk=chunk)
            best, similarity = index.numpy(), score.numpy()
            names, fine = self.names[best], self.fine[best]
        dissimilarity = (1.0 - similarity).astype(np.float32)
        dissimilarity[bad] = np.nan
        clustered = ~bad & (dissimilarity < self.threshold)
        labels = np.where(clustered, names, UNCLUSTERED)
        fine = np.where(clustered, fine, UNCLUSTERED)
        codes = (best / (len(self.codebook) - 1) if self.kind == "autoencoder" else best).astype(np.float32)
        codes[bad] = np.nan
        symmetry[bad] = -1
        return ClassificationResult(labels, fine, clustered, dissimilarity, codes, bad, symmetry)


    def _central(self, kernels, result: ClassificationResult, chunk: int) -> ClassificationResult:
        """``result`` with every kernel held in a central window renamed by the ``inner`` classifier of its size."""
        raw = np.asarray(kernels.detach().cpu().float() if isinstance(kernels, torch.Tensor) else kernels,
                         dtype=np.float32)
        energy = np.nan_to_num(raw.astype(np.float64) ** 2)
        total, taken = energy.sum(axis=(1, 2)), result.degenerate.copy()
        fields = {f: getattr(result, f).copy() for f in ClassificationResult.__dataclass_fields__}
        for clf in self.inner:
            lo = (self.size - clf.size) // 2
            inside = energy[:, lo:lo + clf.size, lo:lo + clf.size].sum(axis=(1, 2))
            use = ~taken & (inside >= CENTRAL_SHARE * total)
            if not use.any():
                continue
            sub = clf.classify(raw[use][:, lo:lo + clf.size, lo:lo + clf.size], chunk=chunk)
            for f in fields:
                fields[f] = fields[f].astype(np.result_type(fields[f], getattr(sub, f)))
                fields[f][use] = getattr(sub, f)
            taken |= use
        coarse = np.array([_FOLDED.get(str(name), str(name)) for name in fields["labels"]])
        fields["fine_labels"] = np.where(coarse != fields["labels"], coarse, fields["fine_labels"])
        fields["labels"] = coarse
        return ClassificationResult(**fields)

    def _classify_windows(self, arr: np.ndarray, chunk: int) -> ClassificationResult:
        """Each kernel named by the base classifier through one window view: the narrowest holding ``WINDOW_SHARE``
        of its (centred) squared weights (``meta["window_pick"] == "least_dissimilar"``: every view, the best)."""
        n, widths = len(arr), self.meta["windows"]
        bad = degenerate(arr) if n else np.zeros(0, bool)
        views = window_views(arr, self.base.size, widths)
        if self.meta.get("window_pick") == "least_dissimilar":
            results = [self.base.classify(view, chunk=chunk) for view in views]
            # A view can be constant where the kernel is not (all of it outside a crop): that view does not count.
            score = np.stack([np.where(r.degenerate, np.inf, r.dissimilarity) for r in results])
            pick = score.argmin(axis=0) if n else np.zeros(0, np.int64)
        else:
            pick = window_choice(arr, widths)
            results = []
            for j, view in enumerate(views):   # each view classifies only the kernels it was chosen for
                rows = np.flatnonzero(pick == j)
                part = self.base.classify(view[rows], chunk=chunk) if len(rows) else None
                full = self.base.classify(view[:0]) if part is None else part
                results.append(_scatter(full, rows, n))
        fields = {f: np.stack([getattr(r, f) for r in results])[pick, np.arange(n)]
                  for f in ClassificationResult.__dataclass_fields__}
        no_view = ~bad & ~np.isfinite(np.where(fields["degenerate"], np.inf, fields["dissimilarity"]))
        fields["dissimilarity"][no_view] = 1.0   # orthogonal to every entry: unclustered
        for name in ("labels", "fine_labels"):
            fields[name] = np.where(no_view | bad, UNCLUSTERED, fields[name])
        fields["clustered"] = fields["clustered"] & ~no_view & ~bad
        fields["degenerate"] = bad
        fields["dissimilarity"][bad], fields["codes"][bad], fields["symmetry"][bad] = np.nan, np.nan, -1
        return ClassificationResult(**fields)


def _scatter(result: ClassificationResult, rows: np.ndarray, n: int) -> ClassificationResult:
    """``result`` (of ``len(rows)`` kernels) placed at ``rows`` of an n-kernel result; other rows degenerate."""
    defaults = {"labels": UNCLUSTERED, "fine_labels": UNCLUSTERED, "clustered": False, "dissimilarity": np.nan,
                "codes": np.nan, "degenerate": True, "symmetry": -1}
    fields = {}
    for f, fill in defaults.items():
        values = getattr(result, f)
        dtype = values.dtype if values.dtype.kind != "U" else "<U32"
        out = np.full(n, fill, dtype=dtype)
        out[rows] = values
        fields[f] = out
    return ClassificationResult(**fields)


def available_pretrained() -> list[int]:
    folder = resources.files("analysis") / _WEIGHTS
    return sorted(int(p.name[len("classifier_k"):-len(".safetensors")]) for p in folder.iterdir()
                  if p.name.startswith("classifier_k") and p.name.endswith(".safetensors"))


def _as_kernels(kernels, size: int) -> np.ndarray:
    """Kernels (N, size, size) as centred float32 (classification sees only the centred kernel), or ValueError."""
    arr = check_kernels(kernels, centre=True) if np.ndim(kernels) != 3 or len(kernels) else np.zeros(
        (0, *np.shape(kernels)[1:]), np.float32)
    if arr.shape[1:] != (size, size):
        raise ValueError(f"this classifier takes {size}x{size} kernels, got {arr.shape[-2]}x{arr.shape[-1]}; use "
                         f"KernelClassifier.pretrained({arr.shape[-1]}) or fit one" if arr.ndim == 3 else
                         f"expected kernels of shape (N, {size}, {size}), got {arr.shape}")
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

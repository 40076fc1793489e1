"""Figures of the kernel-cluster analysis (Babaiee et al., ICLR 2024), as PNGs.

* ``plot_spectrum``   - the autoencoder's reconstruction spectrum with its named code intervals (Fig. 3);
  ``plot_centroids`` is the 3x3 (k-means, Sec. 3.4) counterpart.
* ``plot_pca``        - 3-D PCA of the centred, unit-norm kernels coloured by cluster (Fig. 4).
* ``plot_samples``    - random kernels of each cluster (Fig. 5).
* ``plot_layer_proportions`` - stacked cluster shares per layer (Fig. 7 / 11).
* ``plot_activation`` - box plots of each cluster's total activation, the sum of the raw weights (Fig. 10).

Every family keeps one colour in every figure (``PALETTE``, keyed by ``labels.LABELS``); kernels are drawn red
positive / blue negative on their own symmetric scale. Files are written through ``atomic_path`` so a crash never
leaves a truncated PNG; empty input raises ValueError.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.cbook import boxplot_stats
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dog_init.preview import save_kernel_grid

from ..core.labels import DEGENERATE as LABELS_DEGENERATE
from ..core.labels import LABELS, OTHER, UNCLUSTERED
from ..core.preprocess import check_kernels, degenerate, to_basis
from .style import DEGENERATE, DPI, PALETTE, colour, pretty, save_figure  # selects Agg before pyplot loads

import matplotlib  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_spectrum", "plot_centroids", "plot_pca", "plot_samples", "samples_figure", "kernel_mosaic", "plot_layer_proportions", "layer_proportions_figure",
           "plot_activation"]

assert set(LABELS) <= set(PALETTE), "every label needs a colour"
assert {OTHER, UNCLUSTERED} <= set(PALETTE) and DEGENERATE == LABELS_DEGENERATE


_ABBREV = {"first_derivative": "1st der.", "second_derivative": "2nd der."}


def _short_fine(fine: str) -> str:
    """``first_derivative/left`` -> ``1st der. left``: short enough to sit inside a spectrum interval."""
    family, _, sub = str(fine).partition("/")
    return " ".join(x for x in (_ABBREV.get(family, pretty(family)), pretty(sub)) if x)


_TINY = {"on_centre": "on-c", "off_centre": "off-c", "on_cross": "on-x", "off_cross": "off-x",
         "first_derivative": "d1", "second_derivative": "d2", "on_square": "on-sq", "off_square": "off-sq"}
_CORNERS = {"top_left": "tl", "top_right": "tr", "bottom_left": "bl", "bottom_right": "br"}


def _tiny_fine(fine: str) -> str:
    """``second_derivative/uu-`` -> ``d2 uu-``: for narrow intervals, written vertically."""
    family, _, sub = str(fine).partition("/")
    return " ".join(x for x in (_TINY.get(family, family), _CORNERS.get(sub, sub)) if x)


# --------------------------------------------------------------------------------------------------- helpers
def _draw_kernel(ax, kernel: np.ndarray, edge: str | None = None) -> None:
    """One kernel, red positive / blue negative on its own symmetric scale, framed in ``edge``."""
    limit = float(np.nanmax(np.abs(kernel))) if np.isfinite(kernel).any() else 1.0
    ax.imshow(kernel, cmap="RdBu_r", vmin=-(limit or 1.0), vmax=limit or 1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(edge is not None)
        if edge is not None:
            spine.set_edgecolor(edge)
            spine.set_linewidth(2.5)


def _legend_handles(names) -> list[Patch]:
    return [Patch(facecolor=colour(n), edgecolor="none", label=pretty(n)) for n in names]


def _present(labels: np.ndarray, extra=()) -> list[str]:
    """Labels that occur, in the fixed ``LABELS`` order (unknown names last, sorted)."""
    seen = set(labels.tolist())
    order = [*LABELS, *extra]
    return [n for n in order if n in seen] + sorted(seen - set(order))


def _inputs(kernels, labels) -> tuple[np.ndarray, np.ndarray]:
    """Non-degenerate kernels and their labels; degenerate kernels have no shape to draw or project."""
    arr = check_kernels(kernels)
    labels = np.asarray(labels).astype(str)
    if len(arr) != len(labels):
        raise ValueError(f"{len(arr)} kernels but {len(labels)} labels")
    if len(arr) == 0:
        raise ValueError("no kernels to plot")
    keep = ~degenerate(arr)
    if not keep.any():
        raise ValueError(f"all {len(arr)} kernels are degenerate (constant or non-finite); nothing to plot")
    return arr[keep], labels[keep]


# --------------------------------------------------------------------------------------------------- Fig. 3
def plot_spectrum(classifier, path, *, n: int = 500, n_show: int = 48, ncols: int = 16,
                  title: str | None = None) -> Path:
    """Fig. 3: ``n_show`` kernels evenly spaced along the ``n``-code spectrum, under a band of named intervals."""
    if n_show < 1 or n < n_show:
        raise ValueError(f"need 1 <= n_show <= n, got n_show={n_show}, n={n}")
    codes, kernels, names = classifier.spectrum(n)
    pick = np.unique(np.linspace(0, n - 1, n_show).round().astype(int))
    nrows = math.ceil(len(pick) / ncols)
    cell = 0.62
    fig = plt.figure(figsize=(cell * ncols + 0.4, cell * 1.25 * nrows + 1.9))
    grid = fig.add_gridspec(nrows + 1, ncols, height_ratios=[1.15] + [1.25] * nrows, hspace=0.45, wspace=0.08,
                            bottom=0.08, top=0.88)
    band = fig.add_subplot(grid[0, :])
    band_inches, band_height = cell * ncols, 0.75
    for iv in classifier.intervals:
        band.axvspan(iv.lo, iv.hi, color=colour(iv.name), lw=0)
        # Only intervals wide enough for text get a name; the legend covers the rest.
        # Name an interval horizontally if it fits, else rotated in short form, else leave it to the legend.
        # (~0.062 in per 7 pt bold character.)
        text, mid, width = _short_fine(iv.fine), (iv.lo + iv.hi) / 2, (iv.hi - iv.lo) * band_inches
        if width > 0.062 * len(text) + 0.05:
            band.text(mid, 0.58, text, ha="center", va="center", fontsize=7, color="white", fontweight="bold")
        elif width > 0.13 and 0.062 * len(_tiny_fine(iv.fine)) < 0.7 * band_height:
            band.text(mid, 0.58, _tiny_fine(iv.fine), ha="center", va="center", fontsize=6.5, color="white",
                      fontweight="bold", rotation=90)
    band.vlines(codes[pick], 0, 0.2, color="black", lw=0.9)   # where the tiles below were taken
    band.set_xlim(0, 1)
    band.set_ylim(0, 1)
    band.set_yticks([])
    band.tick_params(axis="x", labelsize=7, pad=1)
    band.set_title("named code intervals (black ticks: codes of the kernels below, titled with their code)",
                   fontsize=8, pad=3)
    for i, j in enumerate(pick):
        ax = fig.add_subplot(grid[1 + i // ncols, i % ncols])
        _draw_kernel(ax, kernels[j], colour(names[j]))
        ax.set_title(f"{codes[j]:.2f}", fontsize=6.5, pad=2)
    fams = _present(np.array([iv.name for iv in classifier.intervals]))
    fig.legend(handles=_legend_handles(fams), loc="upper center", ncol=len(fams), fontsize=7.5,
               frameon=False, bbox_to_anchor=(0.5, 0.06), handlelength=1.2, columnspacing=1.0)
    fig.text(0.5, 0.0, "short names: on-c / off-c centre, on-x / off-x cross, d1 / d2 first / second derivative, "
             "on-sq / off-sq square (tl, tr, bl, br: corner)", ha="center", va="top", fontsize=6.5,
             color="#555555")
    k = classifier.size
    fig.suptitle(title or f"{k}x{k} reconstruction spectrum: decoded kernels along the code axis (frame = interval)",
                 fontsize=10)
    return save_figure(fig, path)


def plot_centroids(classifier, path, *, title: str | None = None) -> Path:
    """Sec. 3.4 counterpart of Fig. 3 for k-means classifiers: the centroids (centred), titled with their names."""
    if classifier.centroids is None:
        raise ValueError("classifier has no centroids (only k-means classifiers do)")
    k = classifier.size
    cents = np.asarray(classifier.centroids, dtype=np.float32).reshape(-1, k, k)
    # Centroids live in min-max space [0, 1]; centring shows their sign pattern like any other kernel.
    cents = cents - cents.mean(axis=(1, 2), keepdims=True)
    titles = [f"{i}: {_short_fine(f)}" for i, f in enumerate(classifier.fine)]
    return save_kernel_grid(cents, titles, path, ncols=min(len(cents), 5), cell=1.8,
                            suptitle=title or f"{k}x{k} k-means centroids (min-max space, centred) and their names")


# --------------------------------------------------------------------------------------------------- Fig. 4
def plot_pca(kernels, labels, path, *, max_points: int = 5000, seed: int = 0, title: str | None = None) -> Path:
    """Fig. 4: the centred, unit-norm kernels projected on their first 3 principal components, by cluster.

    At most ``max_points`` kernels are drawn (a seeded uniform subsample), unclustered ones in light grey and
    underneath so the clusters stay visible; the components are fitted on the drawn kernels."""
    arr, labels = _inputs(kernels, labels)
    n_all = len(arr)
    if n_all > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n_all, max_points, replace=False))
        arr, labels = arr[keep], labels[keep]
    coords = to_basis(arr).astype(np.float64)
    coords -= coords.mean(axis=0)
    _, s, vt = np.linalg.svd(coords, full_matrices=False)
    dims = min(3, vt.shape[0])
    proj = np.zeros((len(coords), 3))
    proj[:, :dims] = coords @ vt[:dims].T
    var = np.zeros(3)
    var[:dims] = (s[:dims] ** 2) / max((s ** 2).sum(), 1e-30)

    fig = plt.figure(figsize=(8.5, 6.4))
    ax = fig.add_subplot(projection="3d")
    names = _present(labels)
    for name in sorted(names, key=lambda n: n != UNCLUSTERED):   # unclustered first = drawn underneath
        m = labels == name
        grey = name == UNCLUSTERED
        ax.scatter(*proj[m].T, s=4 if grey else 6, c=colour(name), alpha=0.6 if grey else 0.8, linewidths=0,
                   depthshade=False, rasterized=True)
    for i, axis in enumerate("xyz"):
        getattr(ax, f"set_{axis}label")(f"PC{i + 1} ({100 * var[i]:.1f}% var.)", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.view_init(elev=22, azim=-58)
    ax.set_box_aspect(None, zoom=0.92)     # keep the rotated axis labels inside the canvas
    handles = [Line2D([], [], ls="", marker="o", markersize=6, markerfacecolor=colour(n), markeredgecolor="none",
                      label=f"{pretty(n)} ({int((labels == n).sum())})") for n in names]
    fig.legend(handles=handles, loc="center right", fontsize=8, title="cluster (n drawn)", title_fontsize=8,
               frameon=False)
    shown = f"{len(arr)} of {n_all}" if len(arr) < n_all else f"all {n_all}"
    fig.suptitle(title or f"PCA of centred, unit-norm kernels ({shown} non-degenerate kernels)", fontsize=10)
    fig.subplots_adjust(left=0.0, right=0.78, top=1.0, bottom=0.0)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------------- Fig. 5
def plot_samples(kernels, labels, path, *, fine_labels=None, per_cluster: int = 8, seed: int = 0,
                 title: str | None = None) -> Path:
    """Fig. 5: one row per cluster present, ``per_cluster`` random (seeded) kernels each, titled with subtype."""
    return save_figure(samples_figure(kernels, labels, fine_labels=fine_labels, per_cluster=per_cluster, seed=seed,
                                title=title), path)


def samples_figure(kernels, labels, *, fine_labels=None, per_cluster: int = 8, seed: int = 0,
                   title: str | None = None):
    """The figure of ``plot_samples``, unsaved (e.g. for TensorBoard's ``add_figure``)."""
    arr = check_kernels(kernels)
    if fine_labels is not None and len(fine_labels) != len(arr):
        raise ValueError(f"{len(arr)} kernels but {len(fine_labels)} fine labels")
    fine = np.asarray(labels if fine_labels is None else fine_labels).astype(str)
    keep = ~degenerate(arr) if len(arr) else np.zeros(0, bool)
    arr_k, labels_k = _inputs(arr, labels)
    fine = fine[keep]
    n_total = len(arr_k)
    rng = np.random.default_rng(seed)
    rows = _present(labels_k)
    fig, axes = plt.subplots(len(rows), per_cluster + 1, figsize=(1.0 * per_cluster + 2.3, 1.12 * len(rows) + 0.6),
                             squeeze=False, gridspec_kw={"width_ratios": [2.2] + [1] * per_cluster})
    for r, name in enumerate(rows):
        idx = np.flatnonzero(labels_k == name)
        pick = np.sort(rng.choice(idx, min(per_cluster, len(idx)), replace=False))
        head = axes[r, 0]
        head.set_axis_off()
        head.text(1.0, 0.5, f"{pretty(name)}\n{len(idx)} ({100 * len(idx) / n_total:.1f}%)", ha="right",
                  va="center", fontsize=8.5, color=colour(name) if name != UNCLUSTERED else "#555555",
                  fontweight="bold", transform=head.transAxes)
        for c in range(per_cluster):
            ax = axes[r, c + 1]
            if c >= len(pick):
                ax.set_axis_off()
                continue
            _draw_kernel(ax, arr_k[pick[c]], colour(name))
            sub = fine[pick[c]]
            if "/" in sub:
                ax.set_title(sub.split("/", 1)[1].replace("_", " "), fontsize=6.5, pad=2)
    fig.suptitle(title or f"Random kernels per cluster (row: cluster, count and share of {n_total} "
                          "non-degenerate kernels)", fontsize=10)
    fig.tight_layout()
    return fig


def kernel_mosaic(kernels, *, zoom: int = 8, gap: int = 2) -> np.ndarray:
    """Kernels (n, k, k) side by side as one RGB image (H, W, 3) uint8, red positive / blue negative on each
    kernel's own symmetric scale, each pixel a ``zoom`` x ``zoom`` block: the samples of ``plot_samples`` without
    matplotlib's layout (a few milliseconds; for TensorBoard's ``add_image`` at every census)."""
    arr = np.asarray(kernels, dtype=np.float32)
    if arr.ndim != 3 or len(arr) == 0:
        raise ValueError(f"kernels must have shape (n, k, k) with n >= 1, got {arr.shape}")
    limit = np.abs(np.nan_to_num(arr)).reshape(len(arr), -1).max(axis=1)
    scaled = 0.5 + 0.5 * np.nan_to_num(arr) / np.where(limit > 0, limit, 1.0)[:, None, None]
    rgb = (matplotlib.colormaps["RdBu_r"](scaled)[..., :3] * 255).astype(np.uint8)   # (n, k, k, 3)
    rgb = rgb.repeat(zoom, axis=1).repeat(zoom, axis=2)
    n, h, w, _ = rgb.shape
    out = np.full((h, n * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        out[:, i * (w + gap):i * (w + gap) + w] = rgb[i]
    return out


# --------------------------------------------------------------------------------------------------- Fig. 7/11
def plot_layer_proportions(labels, layer_index, layer_names, path, *, degenerate_mask=None,
                           title: str | None = None) -> Path:
    """Fig. 7 / 11: per layer (source order on x), the share of its kernels in each cluster, stacked.

    Degenerate kernels (``degenerate_mask``) get their own dark segment rather than hiding in "unclustered"."""
    return save_figure(layer_proportions_figure(labels, layer_index, layer_names, degenerate_mask=degenerate_mask,
                                          title=title), path)


def layer_proportions_figure(labels, layer_index, layer_names, *, degenerate_mask=None, title: str | None = None):
    """The figure of ``plot_layer_proportions``, unsaved (e.g. for TensorBoard's ``add_figure``)."""
    labels = np.asarray(labels).astype(str).copy()
    layer_index = np.asarray(layer_index, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("no kernels to plot")
    if len(layer_index) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(layer_index)} layer indices")
    if degenerate_mask is not None:
        labels[np.asarray(degenerate_mask, dtype=bool)] = DEGENERATE
    n_layers = len(layer_names)
    counts_per_layer = np.bincount(layer_index, minlength=n_layers)
    used = np.flatnonzero(counts_per_layer)           # layers with no kernels in this selection are skipped
    names = _present(labels, extra=(DEGENERATE,))
    x = np.arange(len(used))
    fig, ax = plt.subplots(figsize=(min(max(6.5, 0.28 * len(used) + 3.5), 30), 4.6))
    bottom = np.zeros(len(used))
    for name in names:
        share = np.bincount(layer_index[labels == name], minlength=n_layers)[used] / counts_per_layer[used]
        ax.bar(x, share, bottom=bottom, width=0.85, color=colour(name) if name != DEGENERATE else PALETTE[DEGENERATE],
               label=pretty(name), linewidth=0)
        bottom += share
    ax.set_xlim(-0.6, len(used) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of the layer's kernels")
    ax.set_xlabel("depthwise layer (input to output)")
    step = max(1, math.ceil(len(used) / 60))        # keep tick labels legible for very deep models
    ax.set_xticks(x[::step])
    ax.set_xticklabels([f"{_short(layer_names[i])} ({counts_per_layer[i]})" for i in used[::step]], rotation=90,
                       fontsize=6.5 if len(used) > 20 else 7.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="cluster",
              title_fontsize=8)
    ax.set_title(title or f"Cluster shares per layer ({len(labels)} kernels, {len(used)} layers; "
                          "tick: layer (kernels))", fontsize=10)
    return fig


def _short(name: str, width: int = 28) -> str:
    """Layer names can be long (``stages.3.blocks.2.conv_dw``); keep the informative tail."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


# --------------------------------------------------------------------------------------------------- Fig. 10
def plot_activation(kernels, labels, path, *, max_fliers: int = 300, seed: int = 0,
                    title: str | None = None) -> Path:
    """Fig. 10: per cluster, a box plot of the total activation (sum of the raw, unnormalised weights).

    Box statistics use every kernel; at most ``max_fliers`` outliers per box are drawn (seeded) so a million
    kernels still render quickly."""
    arr, labels = _inputs(kernels, labels)
    total = arr.reshape(len(arr), -1).sum(axis=1, dtype=np.float64)
    names = _present(labels)
    rng = np.random.default_rng(seed)
    stats = []
    for name in names:
        st = boxplot_stats(total[labels == name])[0]
        if len(st["fliers"]) > max_fliers:
            st["fliers"] = rng.choice(st["fliers"], max_fliers, replace=False)
        stats.append(st)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(names) + 2), 4.6))
    boxes = ax.bxp(stats, patch_artist=True, widths=0.6,
                   flierprops={"marker": "o", "markersize": 2.5, "alpha": 0.6, "markeredgecolor": "none"},
                   medianprops={"color": "black", "linewidth": 1.2})
    for patch, flier, name in zip(boxes["boxes"], boxes["fliers"], names):
        patch.set_facecolor(colour(name))
        patch.set_alpha(0.85)
        flier.set_markerfacecolor(colour(name) if name != UNCLUSTERED else "#888888")
    ax.axhline(0, color="#444444", lw=0.8, ls="--", zorder=0)
    # A few extreme kernels would squash every box to a line: zoom to the whiskers and say what was cut.
    lo = min(st["whislo"] for st in stats)
    hi = max(st["whishi"] for st in stats)
    pad = 0.35 * max(hi - lo, 1e-12)
    lo, hi = min(lo - pad, 0), max(hi + pad, 0)
    cut = int(((total < lo) | (total > hi)).sum())
    if cut:
        ax.set_ylim(lo, hi)
        ax.text(0.99, 0.98, f"{cut} outlier(s) beyond the axis range (min {total.min():.3g}, max {total.max():.3g})",
                transform=ax.transAxes, ha="right", va="top", fontsize=7, color="#555555")
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels([f"{pretty(n)}\n(n={int((labels == n).sum())})" for n in names], rotation=30, ha="right",
                       fontsize=8)
    ax.set_ylabel("total activation (sum of raw kernel weights)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"Total activation per cluster ({len(arr)} non-degenerate kernels)", fontsize=10)
    return save_figure(fig, path)

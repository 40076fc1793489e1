"""Figures of the family fit (``analysis.fit``), as PNGs, beside the cluster report's (``figures``).

* ``plot_sigma_by_layer``  - per layer (input to output), the distribution of the fitted centre sigma of the
  kernels fitted as on- or off-centre DoGs (pixels; ``dog_init``'s centre sigma): do receptive fields grow with depth?
* ``plot_orientations``    - polar histogram of the fitted ``theta`` of first derivatives (degrees, counter-
  clockwise from +x, y up): are they on the paper's four axes (Sec. 4: left, right, up, down)?
* ``plot_residual_by_cluster`` - box plots of the fit residual ``||w_c - g t_c|| / ||w_c||`` per autoencoder label.
* ``plot_confusion``       - fitted family against the autoencoder's label, on clustered kernels and on all.

Colours are those of ``style.PALETTE``; files are written atomically (``style.save_figure``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.cbook import boxplot_stats
from matplotlib.ticker import NullFormatter

from ..core.labels import LABELS, OTHER, UNCLUSTERED
from .style import colour, pretty, save_figure  # selects Agg before pyplot loads

import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_sigma_by_layer", "plot_orientations", "plot_residual_by_cluster", "plot_confusion", "AXIS_BAND"]

AXIS_BAND = 10.0   # degrees either side of an axis counted as "on the axis" (uniform angles: 4 * 20 / 360 = 22 %)


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#555555")


def plot_sigma_by_layer(sigma, layer_index, layer_names, on_centre, path, *, title: str | None = None) -> Path:
    """Per layer, the share of its centre-family kernels in each fitted-sigma bin (log-spaced, 0.25-3 px), as a
    heat map (columns sum to 1), with the median sigma of on-centre (red) and off-centre (blue) kernels on top.

    sigma, layer_index, on_centre: (M,) arrays of the kernels to show (on_centre: True for on-, False for off-)."""
    sigma, layer_index = np.asarray(sigma, np.float64), np.asarray(layer_index, np.int64)
    on_centre = np.asarray(on_centre, bool)
    if not (len(sigma) == len(layer_index) == len(on_centre)):
        raise ValueError(f"{len(sigma)} sigmas, {len(layer_index)} layer indices, {len(on_centre)} on/off flags")
    used = np.unique(layer_index)
    edges = np.geomspace(0.25, 3.0, 23)
    fig, ax = plt.subplots(figsize=(min(max(6.5, 0.3 * len(used) + 3.5), 30), 4.6))
    if not len(sigma):
        _empty_note(ax, "no kernel fitted as an on- or off-centre DoG")
    else:
        grid = np.zeros((len(edges) - 1, len(used)))
        for j, layer in enumerate(used):
            counts, _ = np.histogram(np.clip(sigma[layer_index == layer], edges[0], edges[-1]), edges)
            grid[:, j] = counts / max(counts.sum(), 1)
        ax.pcolormesh(np.arange(len(used) + 1) - 0.5, edges, grid, cmap="Greys", vmin=0, vmax=max(grid.max(), 1e-9),
                      shading="flat")
        for flag, name in ((True, "on_centre"), (False, "off_centre")):
            med = [np.median(sigma[(layer_index == layer) & (on_centre == flag)])
                   if ((layer_index == layer) & (on_centre == flag)).any() else np.nan for layer in used]
            ax.plot(np.arange(len(used)), med, "o-", color=colour(name), lw=1.4, ms=4,
                    label=f"median, {pretty(name)} ({int((on_centre == flag).sum())})")
        ax.legend(loc="upper left", fontsize=8, frameon=True, framealpha=0.85)
    counts = np.bincount(np.searchsorted(used, layer_index), minlength=len(used)) if len(used) else []
    ax.set_yscale("log")
    ax.set_ylim(edges[0], edges[-1])
    ax.set_yticks([0.25, 0.5, 1, 2, 3])
    ax.set_yticklabels(["0.25", "0.5", "1", "2", "3"])
    ax.yaxis.set_minor_formatter(NullFormatter())      # a log axis would label 0.3, 0.4, 0.6 ... as 3x10^-1
    ax.set_ylabel("fitted centre sigma (pixels)")
    ax.set_xlabel("depthwise layer, input to output (tick: layer (centre kernels))")
    step = max(1, int(np.ceil(len(used) / 60)))
    ax.set_xticks(np.arange(len(used))[::step])
    ax.set_xticklabels([f"{_short(layer_names[i])} ({c})" for i, c in zip(used, counts)][::step], rotation=90,
                       fontsize=6.5 if len(used) > 20 else 7.5)
    ax.set_title(title or "Fitted centre sigma per layer (grey: share of the layer's centre kernels)", fontsize=10)
    return save_figure(fig, path)


def plot_orientations(theta, path, *, title: str | None = None) -> Path:
    """Polar histogram (10-degree bins) of first-derivative orientations; the share within ``AXIS_BAND`` degrees
    of an axis is printed against the 22 % of uniformly spread angles."""
    theta = np.mod(np.asarray(theta, np.float64), 360.0)
    fig = plt.figure(figsize=(5.2, 5.6))
    ax = fig.add_subplot(projection="polar")
    edges = np.deg2rad(np.arange(0, 361, 10))
    counts, _ = np.histogram(np.deg2rad(theta), edges)
    ax.bar(edges[:-1], counts, width=np.deg2rad(10), align="edge", color=colour("first_derivative"), alpha=0.85,
           edgecolor="white", linewidth=0.5)
    ax.set_xticks(np.deg2rad([0, 90, 180, 270]))
    ax.set_xticklabels(["0 (right)", "90 (up)", "180 (left)", "270 (down)"], fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    off_axis = np.abs((theta + 45.0) % 90.0 - 45.0)
    share = float((off_axis <= AXIS_BAND).mean()) if len(theta) else float("nan")
    note = (f"{len(theta)} first derivatives; {100 * share:.0f} % within {AXIS_BAND:.0f} deg of an axis "
            f"(uniform angles: {100 * 4 * 2 * AXIS_BAND / 360:.0f} %)") if len(theta) else "no first derivatives"
    fig.text(0.5, 0.02, note, ha="center", fontsize=8.5)
    fig.suptitle(title or "Fitted orientation of first derivatives", fontsize=10)
    return save_figure(fig, path)


def plot_residual_by_cluster(residual, labels, path, *, threshold_residual: float | None = None,
                             title: str | None = None) -> Path:
    """Box plots of the fit residual per autoencoder label; ``threshold_residual`` (dashed) is the residual whose
    cosine dissimilarity equals the classifier's threshold, ``sqrt(1 - (1 - t)^2)``."""
    residual, labels = np.asarray(residual, np.float64), np.asarray(labels).astype(str)
    if len(residual) != len(labels):
        raise ValueError(f"{len(residual)} residuals but {len(labels)} labels")
    if not len(residual):
        raise ValueError("no kernels to plot")
    names = [n for n in LABELS if (labels == n).any()]
    stats = [boxplot_stats(residual[labels == n])[0] for n in names]
    for st in stats:
        st["fliers"] = st["fliers"][:300]
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(names) + 2), 4.4))
    boxes = ax.bxp(stats, patch_artist=True, widths=0.6, medianprops={"color": "black", "linewidth": 1.2},
                   flierprops={"marker": "o", "markersize": 2.5, "alpha": 0.5, "markeredgecolor": "none"})
    for patch, flier, name in zip(boxes["boxes"], boxes["fliers"], names):
        patch.set_facecolor(colour(name))
        patch.set_alpha(0.85)
        flier.set_markerfacecolor(colour(name) if name != UNCLUSTERED else "#888888")
    if threshold_residual is not None:
        ax.axhline(threshold_residual, color="#444444", ls="--", lw=0.9)
        ax.text(len(names) + 0.45, threshold_residual, "classifier threshold", ha="right", va="bottom", fontsize=7,
                color="#444444")
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels([f"{pretty(n)}\n(n={int((labels == n).sum())})" for n in names], rotation=30, ha="right",
                       fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("fit residual ||w - fit|| / ||w|| (centred)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Residual of the best closed form, per autoencoder cluster", fontsize=10)
    return save_figure(fig, path)


def plot_confusion(fitted, clustered_labels, nearest_labels, clustered, path, *, title: str | None = None) -> Path:
    """Two confusion matrices, rows = fitted family, columns = autoencoder: left, the clustered kernels and their
    labels; right, every kernel and the name of its nearest codebook entry, threshold ignored. Cells: counts,
    shaded by the share of their row; titles: the share on the diagonal."""
    fitted, clustered = np.asarray(fitted).astype(str), np.asarray(clustered, bool)
    clustered_labels, nearest_labels = np.asarray(clustered_labels).astype(str), np.asarray(nearest_labels).astype(str)
    if not (len(fitted) == len(clustered) == len(clustered_labels) == len(nearest_labels)):
        raise ValueError("fitted families, labels and clustered flags differ in length")
    rows = [n for n in LABELS if (fitted == n).any()]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.5 * len(rows) + 3.2))
    for ax, mask, cols_of, what in ((axes[0], clustered, clustered_labels, "clustered kernels, autoencoder label"),
                                    (axes[1], np.ones(len(fitted), bool), nearest_labels,
                                     "all kernels, autoencoder's nearest name (threshold ignored)")):
        f, c = fitted[mask], cols_of[mask]
        cols = [n for n in LABELS if (c == n).any()] or [OTHER]
        m = np.array([[int(((f == r) & (c == k)).sum()) for k in cols] for r in rows]).reshape(len(rows), len(cols))
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(cols)):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7.5,
                            color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([pretty(k) for k in cols], rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([pretty(r) for r in rows], fontsize=8)
        ax.set_xlabel("autoencoder")
        ax.set_ylabel("fitted family")
        agree = float((f == c).mean()) if len(f) else float("nan")
        ax.set_title(f"{what}\nagreement {100 * agree:.1f} % of {len(f)}", fontsize=9)
    fig.suptitle(title or "Fitted family vs autoencoder label", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]

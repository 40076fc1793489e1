"""The family fit's part of the cluster report, ``python -m analysis report ... --fit`` (issue 9).

Per model and kernel size, beside the report's other files (``<stem>`` is ``k7`` or ``<model>_k7``)::

    <stem>_fit.csv            one row per kernel: layer, index, autoencoder label, fitted family, subtype,
                              residual, gain, offset and every parameter (``FamilyFit.to_csv``)
    <stem>_fit_sigma.png      fitted centre sigma per layer              (do receptive fields grow with depth?)
    <stem>_fit_theta.png      polar histogram of first-derivative theta  (are they on the four axes?)
    <stem>_fit_residual.png   fit residual per autoencoder cluster
    <stem>_fit_confusion.png  fitted family vs autoencoder label, on clustered kernels and on all

The sigma and orientation figures use the *well-fitted* kernels only: those whose fit residual is below the residual
equivalent of the classifier's threshold ``t`` (cosine dissimilarity), ``sqrt(1 - (1 - t)^2)`` (0.71 at 7x7,
0.6 at 5x5, 0.47 at 3x3), so untrained or noise-like kernels do not fill them with meaningless shapes.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np

from . import fit_figures
from ..fit.fitting import fit_families

__all__ = ["write_fit", "nearest_names", "threshold_residual", "FIT_FILES"]

FIT_FILES = ("fit.csv", "fit_sigma.png", "fit_theta.png", "fit_residual.png", "fit_confusion.png")


def threshold_residual(threshold: float) -> float:
    """The fit residual whose centred cosine dissimilarity is ``threshold``: ``sqrt(1 - (1 - t)^2)``."""
    return math.sqrt(max(0.0, 1.0 - (1.0 - threshold) ** 2))


def nearest_names(clf, kernels) -> np.ndarray:
    """Per kernel, the classifier's name for its nearest codebook entry (k-means: centroid) with the clustering
    threshold lifted, i.e. ``clf.classify`` by a copy whose threshold admits every dissimilarity; "unclustered"
    stays only on degenerate kernels."""
    lifted = copy.copy(clf)
    lifted.threshold = float("inf")
    return np.asarray(lifted.classify(kernels).labels).astype(object)


def _channel_index(layer_index: np.ndarray, n_layers: int) -> np.ndarray:
    order = np.argsort(layer_index, kind="stable")
    starts = np.r_[0, np.cumsum(np.bincount(layer_index, minlength=n_layers))[:-1]]
    index = np.empty(len(layer_index), np.int64)
    index[order] = np.arange(len(layer_index)) - starts[layer_index[order]]
    return index


def _number(x: float):
    return None if not np.isfinite(x) else float(x)


def write_fit(out_dir, stem: str, tag: str, group, res, clf, *, progress: bool = False) -> tuple[list[str], dict]:
    """Fit ``group``'s kernels (a ``KernelGroup``), write the files above into ``out_dir``; return their names and
    the summary entry (agreements with the autoencoder, shares, medians)."""
    out_dir = Path(out_dir)
    fit = fit_families(group.kernels, progress=progress)
    ok = ~fit.degenerate
    layers = np.asarray(group.layer_names, dtype=object)
    fit.to_csv(out_dir / f"{stem}_fit.csv", extra={
        "layer": layers[group.layer_index].astype(str),
        "index": _channel_index(group.layer_index, len(layers)),
        "autoencoder_label": np.asarray(res.labels).astype(str)})
    files = [f"{stem}_fit.csv"]
    limit = threshold_residual(clf.threshold)
    good = ok & (np.nan_to_num(fit.residual, nan=2.0) <= limit)
    centre = good & np.isin(fit.family, ("on_centre", "off_centre"))
    d1 = good & (fit.family == "first_derivative")
    nearest = nearest_names(clf, group.kernels)
    if ok.any():
        files.append(fit_figures.plot_sigma_by_layer(
            fit.params["sigma"][centre], group.layer_index[centre], group.layer_names, fit.family[centre] == "on_centre",
            out_dir / f"{stem}_fit_sigma.png", title=f"{tag}: fitted centre sigma per layer ({int(centre.sum())} "
            f"well-fitted on/off-centre kernels, residual <= {limit:.2f})").name)
        files.append(fit_figures.plot_orientations(
            fit.params["theta"][d1], out_dir / f"{stem}_fit_theta.png",
            title=f"{tag}: fitted orientation of first derivatives\n(well fitted, residual <= {limit:.2f})").name)
        files.append(fit_figures.plot_residual_by_cluster(
            fit.residual[ok], res.labels[ok], out_dir / f"{stem}_fit_residual.png", threshold_residual=limit,
            title=f"{tag}: residual of the best closed form per autoencoder cluster").name)
        files.append(fit_figures.plot_confusion(
            fit.family[ok], res.labels[ok], nearest[ok], res.clustered[ok], out_dir / f"{stem}_fit_confusion.png",
            title=f"{tag}: fitted family (rows) vs autoencoder (columns)").name)
    clustered = res.clustered & ok
    theta = np.mod(fit.params["theta"][d1], 360.0)
    on_axis = np.abs((theta + 45.0) % 90.0 - 45.0) <= fit_figures.AXIS_BAND
    by_layer = {}
    for i, name in enumerate(group.layer_names):
        sig = fit.params["sigma"][centre & (group.layer_index == i)]
        if len(sig) >= 5:
            by_layer[name] = float(np.median(sig))
    n_ok = int(ok.sum())
    stats = {
        "n_fitted": n_ok, "n_well_fitted": int(good.sum()), "well_fitted_residual": limit,
        "n_clustered": int(clustered.sum()),
        "agreement_clustered": _number((fit.family[clustered] == res.labels[clustered]).mean())
        if clustered.any() else None,
        "agreement_all": _number((fit.family[ok] == nearest[ok]).mean()) if n_ok else None,
        "residual_median": _number(np.median(fit.residual[ok])) if n_ok else None,
        "family_shares": {f: int((fit.family == f).sum()) / n_ok if n_ok else 0.0 for f in fit.families},
        "first_derivative_on_axis_share": _number(on_axis.mean()) if len(theta) else None,
        "centre_sigma_median_by_layer": by_layer,
        "families": {f: {k: _number(v) if k != "count" else v for k, v in s.items()}
                     for f, s in fit.summary().items()},
    }
    return files, stats

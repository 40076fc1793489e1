"""The cluster report of Babaiee et al. (ICLR 2024): classify every depthwise kernel of one or more models and
write the paper's figures (Fig. 3, 4, 5, 7/11, 10), a per-kernel CSV and the summary table (Table 1 / Appendix L).

>>> summary = run_report("timm:convnext_tiny.fb_in1k", "reports/convnext_tiny")
>>> summary = run_report(["data/mcunet-vww_k5.npy", "data/mcunet-vww_k7.npy"], "reports/vww",
...                      classifiers=["clf/classifier_k5.safetensors", "clf/classifier_k7.safetensors"])

Output (one model; with several, the per-model figures get a ``<model>_`` prefix)::

    summary.json / summary.csv        one row per (model, size): counts, clustered share, share per family
    k7_kernels.csv                    one row per kernel: model, layer, index, label, fine_label, clustered, ...
    k7_spectrum.png                   Fig. 3 (k-means classifiers, i.e. 3x3: k3_centroids.png)
    k7_pca.png, k7_samples.png, k7_layers.png, k7_activation.png      Fig. 4, 5, 7/11, 10

Shares are of *all* kernels of the model and size; degenerate kernels (constant or non-finite) are their own
column, so ``unclustered`` counts only real kernels beyond the threshold and the shares sum to 1.
Everything is checked (sources, classifier files, output folder) and loaded before anything is written; output is
built in a hidden sibling folder and renamed into place (``dog_init.files.atomic_folder``), so a failed or
interrupted run leaves no partial report; the folders of runs killed outright are removed by the next report into the same folder.
"""
from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dog_init.files import atomic_folder, remove_stale_partials, strict_json

from ..classify.census import Census, ClassifierChoice, take_census
from ..core.labels import LABELS
from ..kernels.extract import ALLOWED_EXTENSIONS, KernelSet, extract_depthwise, nonfinite_warning
from . import figures
from .fit_tables import write_fit
from .style import DEGENERATE

__all__ = ["run_report", "model_label", "summary_row", "write_kernel_csv", "SHARE_COLUMNS", "KERNEL_COLUMNS"]

SHARE_COLUMNS = (*LABELS, DEGENERATE)       # summary share columns; they sum to 1 per row
# index: channel within its layer; code: in [0, 1] (autoencoder) or the centroid index (k-means); NaN if degenerate
KERNEL_COLUMNS = ("model", "layer", "index", "label", "fine_label", "clustered", "dissimilarity", "code",
                  "degenerate")
_SUMMARY_COLUMNS = ("model", "source", "size", "n_kernels", "n_degenerate", "n_layers", "n_clustered",
                    "clustered_share", *SHARE_COLUMNS, "classifier", "threshold")


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def run_report(sources, out_dir, classifiers=None, *, checkpoint=None, overwrite: bool = False, seed: int = 0,
               per_cluster: int = 8, max_points: int = 5000, n_spectrum: int = 500, progress: bool = True,
               fit: bool = False, log=print, warn=_to_stderr) -> dict:
    """Classify the depthwise kernels of ``sources`` per size and write the report into ``out_dir``.

    sources: one source as accepted by ``extract_depthwise`` (``"timm:NAME"``, a weights/.npy/.npz file, an
        ``nn.Module``, a ``KernelSet``), a list of them, or a dict {model label: source or list}. In a list, files
        named ``<model>_k<size>.npy`` (the shared kernel data) are grouped into one model ``<model>``; every other
        item is its own model.
    classifiers: None (the bundled ``KernelClassifier.pretrained(k)`` per size), or classifiers / ``.safetensors``
        paths as a list or a dict {size: ...}; sizes not given fall back to the bundled ones. A size with no
        classifier is skipped with its reason (``summary["skipped"]``); if every size is skipped, ValueError.
    checkpoint: weights file for a single ``"timm:NAME"`` source (see ``extract_depthwise``).
    overwrite: replace an existing non-empty ``out_dir`` (only once the new report is complete).
    fit: also fit every kernel's closed form (``analysis.fit``) and write ``report.fit_tables``' files; each
        summary row then has a ``fit`` entry (agreement with the autoencoder, shares, medians).
    log / warn: where progress lines / warnings go (warnings: a model with NaN/inf kernels; default stderr).

    Returns the summary dict that is also written as ``summary.json``. Raises FileNotFoundError / ValueError /
    FileExistsError naming the bad value before anything is written.
    """
    out_dir = Path(os.path.abspath(out_dir))     # "." has no name to build sibling folders from
    _check_out_dir(out_dir, overwrite)
    for name, value, low in (("per_cluster", per_cluster, 1), ("max_points", max_points, 10),
                             ("n_spectrum", n_spectrum, 50)):
        if int(value) < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    models = _group_sources(sources)
    _check_not_inside(out_dir, [*_input_paths(models.values()), checkpoint,
                                *(classifiers.values() if isinstance(classifiers, dict) else
                                  classifiers if isinstance(classifiers, (list, tuple)) else [classifiers])])
    if checkpoint is not None and len(models) != 1:
        raise ValueError(f"checkpoint {os.fspath(checkpoint)!r} needs a single 'timm:NAME' source, got "
                         f"{len(models)} models")
    choice = ClassifierChoice(classifiers)
    sets = {}
    for label, src in tqdm(models.items(), desc="extracting kernels", disable=not progress or len(models) < 2):
        sets[label] = extract_depthwise(src, checkpoint=checkpoint)
        if (note := nonfinite_warning(sets[label])) is not None:
            warn(note)
    sizes = sorted({k for ks in sets.values() for k in ks.sizes})
    chosen, skipped = {}, []
    for k in sizes:
        clf, origin, reason = choice.for_size(k)
        holders = [m for m, ks in sets.items() if k in ks.sizes]
        if clf is None:
            n = sum(len(sets[m][k]) for m in holders)
            skipped.append({"size": k, "n_kernels": n, "models": holders, "reason": reason})
            log(f"skipping {k}x{k} kernels ({n} in {', '.join(holders)}): {reason}")
        else:
            chosen[k] = (clf, origin)
    choice.check_used(sizes)
    if not chosen:
        raise ValueError("no classifier for any kernel size present (" + "; ".join(
            f"{s['size']}x{s['size']}: {s['reason']}" for s in skipped) + ")")

    for stale in remove_stale_partials(out_dir):   # left by runs killed outright (SIGKILL), which cannot clean up
        log(f"removed {str(stale)!r}: a partial report of a run that no longer exists")
    # _check_out_dir decided whether an existing folder may go; it is replaced only once the new one is whole.
    with atomic_folder(out_dir, replace=True, what="output") as tmp:
        censuses = {label: take_census(ks, choice) for label, ks in sets.items()}
        summary = _write_report(tmp, sets, censuses, chosen, skipped, seed=seed, per_cluster=per_cluster,
                                max_points=max_points, n_spectrum=n_spectrum, progress=progress, fit=fit)
        summary["out_dir"] = str(out_dir)
        write_json(tmp / "summary.json", summary)
    log(f"wrote report to {out_dir} ({len(summary['files'])} files)")
    return summary


# ------------------------------------------------------------------------------------------- checks (no work)
def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"output {str(out_dir)!r} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"output directory {str(out_dir)!r} exists and is not empty; choose another or "
                              "overwrite it (overwrite=True, CLI --overwrite)")
    for parent in [out_dir.parent, *out_dir.parent.parents]:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise PermissionError(f"cannot create {str(out_dir)!r}: {str(parent)!r} is not a writable directory")
            break


def _input_paths(sources) -> list[str]:
    """File paths among ``sources`` (nested lists), each .npy with its ``.layers.json`` sidecar."""
    paths = []
    for item in sources:
        if isinstance(item, (list, tuple)):
            paths += _input_paths(item)
        elif isinstance(item, (str, os.PathLike)) and not os.fspath(item).startswith("timm:"):
            paths += [os.fspath(item), str(Path(item).with_suffix(".layers.json"))]
    return paths


def _check_not_inside(out_dir: Path, inputs) -> None:
    """Refuse an output folder whose replacement would delete an input or the working directory."""
    out = os.path.realpath(out_dir)
    inside = lambda path: os.path.commonpath([out, os.path.realpath(path)]) == out  # noqa: E731
    if inside(os.getcwd()):
        raise ValueError(f"output {str(out_dir)!r} is the working directory or holds it; a report replaces its "
                         "folder, so choose a new folder (e.g. reports/NAME)")
    for path in inputs:
        if isinstance(path, (str, os.PathLike)) and os.path.exists(path) and inside(path):
            raise ValueError(f"output {str(out_dir)!r} holds the input {os.fspath(path)!r}, which writing the report "
                             "would delete; choose an output folder outside the inputs")


_SIZE_SUFFIX = re.compile(r"_k\d+$")


def model_label(item) -> str:
    """Label of a source in the report: ``timm:NAME`` -> NAME, ``dir/mcunet-vww_k7.npy`` -> mcunet-vww,
    a KernelSet -> its .source, a module -> its class name."""
    if isinstance(item, KernelSet):
        return item.source or "kernels"
    if isinstance(item, (str, os.PathLike)):
        text = os.fspath(item)
        if text.startswith("timm:"):
            return text[len("timm:"):]
        return _SIZE_SUFFIX.sub("", Path(text).stem) or Path(text).stem
    return type(item).__name__


def _check_path_source(item) -> None:
    """Cheap existence / extension check for file sources, so a typo in the last of several models is reported
    before the first is loaded (``extract_depthwise`` checks the rest)."""
    if isinstance(item, (str, os.PathLike)) and not os.fspath(item).startswith("timm:"):
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"source {os.fspath(item)!r} does not exist")
        if path.is_file() and path.suffix.lower() not in ALLOWED_EXTENSIONS:
            raise ValueError(f"source {os.fspath(item)!r} has unknown extension {path.suffix!r}; allowed: "
                             f"{' '.join(ALLOWED_EXTENSIONS)}")


def _group_sources(sources) -> dict[str, object]:
    if isinstance(sources, dict):
        if not sources:
            raise ValueError("no sources given")
        groups = {str(label): src for label, src in sources.items()}
    else:
        items = list(sources) if isinstance(sources, (list, tuple)) else [sources]
        if not items:
            raise ValueError("no sources given")
        paths = [os.path.realpath(i) for i in items if isinstance(i, (str, os.PathLike))
                 and not os.fspath(i).startswith("timm:")]
        if len(set(paths)) < len(paths):
            dup = next(p for p in paths if paths.count(p) > 1)
            raise ValueError(f"source {dup!r} is listed more than once")
        groups: dict[str, list] = {}
        for item in items:
            groups.setdefault(model_label(item), []).append(item)
        groups = {label: group[0] if len(group) == 1 else group for label, group in groups.items()}
    for src in groups.values():
        for item in (src if isinstance(src, (list, tuple)) else [src]):
            _check_path_source(item)
    return groups


# ------------------------------------------------------------------------------------------------ the work
def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "model"


def _write_report(tmp: Path, sets: dict[str, KernelSet], censuses: dict[str, Census], chosen: dict, skipped: list, *,
                  seed, per_cluster, max_points, n_spectrum, progress, fit=False) -> dict:
    slugs, prefixes = {}, {}
    for label in sets:
        slug = _slug(label)
        while slug in slugs.values():
            slug += "_"
        slugs[label] = slug
        prefixes[label] = "" if len(sets) == 1 else f"{slug}_"
    rows, files = [], []
    jobs = [(k, label) for k in sorted(chosen) for label, ks in sets.items() if k in ks.sizes]
    bar = tqdm(total=len(jobs) + len(chosen), desc="report", disable=not progress)
    for k in sorted(chosen):
        clf, origin = chosen[k]
        if clf.kind == "kmeans":
            files.append(figures.plot_centroids(clf, tmp / f"k{k}_centroids.png").name)
        else:
            files.append(figures.plot_spectrum(clf, tmp / f"k{k}_spectrum.png", n=n_spectrum).name)
        bar.update()
        per_kernel = []
        for label, ks in sets.items():
            if k not in ks.sizes:
                continue
            g, pre = ks[k], prefixes[label]
            res = censuses[label].sizes[k].result   # KernelGroup.degenerate is the classifier's rule too
            rows.append(summary_row(label, ks.source, k, g, res, origin, clf.threshold))
            if fit:     # issue 9: the closed-form fit beside the autoencoder (analysis/fit_report.py)
                fit_files, rows[-1]["fit"] = write_fit(tmp, f"{pre}k{k}", f"{label}, {k}x{k}", g, res, clf,
                                                       progress=progress)
                files += fit_files
            per_kernel.append((label, g, res))
            tag = f"{label}, {k}x{k}"
            if (~res.degenerate).any():
                files.append(figures.plot_pca(g.kernels, res.labels, tmp / f"{pre}k{k}_pca.png", seed=seed,
                                              max_points=max_points, title=f"{tag}: PCA of centred, unit-norm "
                                              f"kernels ({min(max_points, int((~res.degenerate).sum()))} of "
                                              f"{len(g)} kernels drawn)").name)
                files.append(figures.plot_samples(g.kernels, res.labels, tmp / f"{pre}k{k}_samples.png",
                                                  fine_labels=res.fine_labels, per_cluster=per_cluster, seed=seed,
                                                  title=f"{tag}: random kernels per cluster").name)
                files.append(figures.plot_activation(g.kernels, res.labels, tmp / f"{pre}k{k}_activation.png",
                                                     seed=seed, title=f"{tag}: total activation (sum of raw "
                                                     "weights) per cluster").name)
            files.append(figures.plot_layer_proportions(res.labels, g.layer_index, g.layer_names,
                                                        tmp / f"{pre}k{k}_layers.png", degenerate_mask=res.degenerate,
                                                        title=f"{tag}: cluster shares per layer").name)
            bar.update()
        files.append(write_kernel_csv(tmp / f"k{k}_kernels.csv", per_kernel).name)
    bar.close()
    files.append(_write_summary_csv(tmp / "summary.csv", rows).name)
    return {"format": "dog-init-report", "version": 1,
            "models": [{"model": label, "source": ks.source, "sizes": ks.sizes, "n_kernels": len(ks),
                        "file_prefix": prefixes[label]} for label, ks in sets.items()],
            "classifiers": [{"size": k, "kind": clf.kind, "threshold": clf.threshold, "entries": len(clf.codebook),
                             "origin": origin} for k, (clf, origin) in sorted(chosen.items())],
            "rows": rows, "skipped": skipped, "files": sorted(files + ["summary.json"])}




def summary_row(label, source, k, g, res, origin, threshold) -> dict:
    n = len(g)
    counts = {name: int(((res.labels == name) & ~res.degenerate).sum()) for name in LABELS}
    counts[DEGENERATE] = int(res.degenerate.sum())
    return {"model": label, "source": source, "size": k, "n_kernels": n, "n_degenerate": counts[DEGENERATE],
            "n_layers": len(g.layer_names), "n_clustered": int(res.clustered.sum()),
            "clustered_share": float(res.clustered.sum() / n) if n else 0.0,
            "counts": counts, "shares": {name: c / n if n else 0.0 for name, c in counts.items()},
            "classifier": origin, "threshold": threshold}


def write_kernel_csv(path: Path, parts) -> Path:
    """One row per kernel; ``index`` is the kernel's channel within its layer."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(KERNEL_COLUMNS)
        for label, g, res in parts:
            order = np.argsort(g.layer_index, kind="stable")
            index = np.empty(len(g), np.int64)
            starts = np.r_[0, np.cumsum(np.bincount(g.layer_index, minlength=len(g.layer_names)))[:-1]]
            index[order] = np.arange(len(g)) - starts[g.layer_index[order]]
            layer = np.asarray(g.layer_names, dtype=object)[g.layer_index]
            code = res.codes if res.codes.dtype.kind == "f" else res.codes.astype(np.float32)
            writer.writerows(zip([label] * len(g), layer.tolist(), index.tolist(), res.labels.tolist(),
                                 res.fine_labels.tolist(), res.clustered.astype(int).tolist(),
                                 np.round(res.dissimilarity.astype(np.float64), 6).tolist(),
                                 np.round(code.astype(np.float64), 6).tolist(), res.degenerate.astype(int).tolist()))
    return path


def _write_summary_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_SUMMARY_COLUMNS)
        for r in rows:
            writer.writerow([r["model"], r["source"], r["size"], r["n_kernels"], r["n_degenerate"], r["n_layers"],
                             r["n_clustered"], f"{r['clustered_share']:.6f}",
                             *(f"{r['shares'][c]:.6f}" for c in SHARE_COLUMNS), r["classifier"], r["threshold"]])
    return path


def write_json(path: Path, obj) -> None:
    path.write_text(strict_json(obj, indent=1))

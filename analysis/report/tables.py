"""Plain-text tables for the command line: cluster shares per model and size (``python -m analysis report`` and
``classify``), with ``classify_files`` doing the whole of ``classify``: kernel files in, share rows (and optionally the
per-kernel CSV) out."""
from __future__ import annotations

import sys
from typing import Callable

from dog_init.files import atomic_path

from ..classify.census import ClassifierChoice, checked_census
from ..kernels.extract import extract_depthwise, nonfinite_warning
from .folder import SHARE_COLUMNS, model_label, summary_row, write_kernel_csv

__all__ = ["share_table", "classify_files"]

_SHORT = {"first_derivative": "1st_der", "second_derivative": "2nd_der", "unclustered": "unclust",
          "degenerate": "degen"}


def share_table(rows: list[dict]) -> str:
    """One line per (model, size) row of ``summary_row``: kernels, clustered share, share of every label."""
    lines = [f"{'model':<28} {'size':>4} {'kernels':>8} {'clust.':>7} "
             + " ".join(f"{_SHORT.get(c, c):>10}" for c in SHARE_COLUMNS)]
    for r in rows:
        lines.append(f"{r['model'][:28]:<28} {r['size']:>4} {r['n_kernels']:>8} {100 * r['clustered_share']:>6.1f}% "
                     + " ".join(f"{100 * r['shares'][c]:>9.1f}%" for c in SHARE_COLUMNS))
    return "\n".join(lines)


def classify_files(files: list[str], classifiers=None, *, csv=None, log: Callable[[str], None] = print,
                   warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> list[dict]:
    """Classify the kernels of ``files`` (one model: their rows are joined) size by size through the census loop;
    returns the share rows, logs the skipped sizes, writes the per-kernel CSV to ``csv`` if given. ValueError
    when a given classifier fits no size present, or no size has a classifier."""
    choice = ClassifierChoice(classifiers)
    ks = extract_depthwise(list(files))
    if (note := nonfinite_warning(ks)) is not None:
        warn(note)
    census = checked_census(ks, choice, log=log)
    label = " + ".join(dict.fromkeys(model_label(f) for f in files))
    rows = [summary_row(label, ks.source, k, size.group, size.result, size.origin, size.classifier.threshold)
            for k, size in census.sizes.items()]
    if csv is not None:
        with atomic_path(csv, what="--csv") as tmp:
            write_kernel_csv(tmp, [(label, size.group, size.result) for size in census.sizes.values()])
    return rows

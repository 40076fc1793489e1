"""``python -m train.timeline OUTPUT [OUTPUT ...] --out timeline.png``: the paper's Appendix G figure, the share
of each kernel cluster against training time, one panel per run (or per group of seeds), side by side.

Each argument is a run folder (holding ``census.jsonl``) or ``LABEL=DIR1,DIR2,...``: runs of one setting under
different seeds, drawn as their mean (the clustered share also as mean +- std). Step censuses
(``tracking.at_steps``) sit at fractional epochs, so the first hundreds of steps, where the paper sees the clusters
appear, are visible at the left of each panel.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .jsonl import JsonLines

__all__ = ["load_census", "census_series", "plot_timeline", "parse_groups"]

STACK = ("on_centre", "off_centre", "on_cross", "off_cross", "first_derivative", "second_derivative", "on_square",
         "off_square", "other", "unclustered")   # unclustered (and degenerate) fill the panel to 1


def load_census(run: Path, ema: bool = False) -> list[dict]:
    """The census lines of ``run`` in training order (EMA shares when ``ema``); ValueError if there are none."""
    path = Path(run) / "census.jsonl"
    if not path.is_file():
        raise ValueError(f"{str(run)!r} has no census.jsonl (is it a `python -m train` output folder?)")
    lines = JsonLines(path).read()
    if ema:
        lines = [{**line, **line["ema"]} for line in lines if "ema" in line]
    if not lines:
        raise ValueError(f"{str(path)!r} holds no census" + (" of the EMA weights" if ema else ""))
    return sorted(lines, key=lambda r: r["step"])


def census_series(lines: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(x in epochs, {family / "clustered": share per census}); step censuses at step / steps-per-epoch."""
    per_epoch = [r["step"] / r["epoch"] for r in lines if r.get("kind", "epoch") == "epoch" and r["epoch"] > 0]
    steps_per_epoch = per_epoch[0] if per_epoch else None
    x = np.array([r["epoch"] if r.get("kind", "epoch") == "epoch" or not steps_per_epoch
                  else r["step"] / steps_per_epoch for r in lines], dtype=float)
    series = {f: np.array([r["families"].get(f, 0.0) for r in lines]) for f in STACK}
    series["clustered"] = np.array([r["clustered"] for r in lines])
    series["unclustered"] = 1.0 - series["clustered"]
    return x, series


def parse_groups(items: list[str]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for item in items:
        label, _, dirs = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
        runs = [Path(d) for d in dirs.split(",") if d]
        if not runs:
            raise ValueError(f"no run folders in {item!r}")
        if label in groups:
            raise ValueError(f"label {label!r} is used twice")
        groups[label] = runs
    return groups


def _group_series(runs: list[Path], ema: bool):
    xs, all_series = [], []
    for run in runs:
        x, s = census_series(load_census(run, ema))
        xs.append(x)
        all_series.append(s)
    common = xs[0]
    for x in xs[1:]:   # the censuses every run has (seeds of one recipe share them)
        common = np.intersect1d(common, x)
    if len(common) == 0:
        raise ValueError(f"the runs {', '.join(map(str, runs))} share no census time; are they one recipe?")
    stacked = {k: np.stack([s[k][np.searchsorted(x, common)] for x, s in zip(xs, all_series)])
               for k in all_series[0]}
    return common, stacked


def plot_timeline(groups: dict[str, list[Path]], out: Path, *, ema: bool = False, title: str | None = None) -> Path:
    """Stacked family shares against epoch, one panel per group; the clustered share as a line (+- std)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from analysis import PALETTE, legend_beside, panel_grid, pretty, save_figure

    data = {label: _group_series(runs, ema) for label, runs in groups.items()}   # errors before drawing
    fig, axes = panel_grid(len(data), panel_size=(4.2, 3.9), ylabel="share of depthwise kernels")
    for ax, (label, (x, s)) in zip(axes, data.items()):
        means = [s[f].mean(axis=0) for f in STACK]
        present = [i for i, m in enumerate(means) if m.max() > 0]
        ax.stackplot(x, *[means[i] for i in present], colors=[PALETTE[STACK[i]] for i in present], alpha=0.9,
                     linewidth=0)
        clustered = s["clustered"]
        ax.plot(x, clustered.mean(axis=0), color="black", lw=1.6, marker="o", markersize=3)
        if len(clustered) > 1:
            lo, hi = clustered.mean(0) - clustered.std(0), clustered.mean(0) + clustered.std(0)
            ax.fill_between(x, lo, hi, color="black", alpha=0.15, linewidth=0)
        n = len(groups[label])
        ax.set_title(f"{label} ({n} run{'s' if n > 1 else ''}{', mean' if n > 1 else ''})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_xlim(x.min(), x.max())
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.25)
    handles = [Patch(color=PALETTE[f], label=pretty(f)) for f in reversed(STACK)]
    handles.insert(0, plt.Line2D([], [], color="black", marker="o", markersize=3,
                                 label="clustered (+- std)" if any(len(r) > 1 for r in groups.values())
                                 else "clustered"))
    fig.suptitle(title or "Kernel clusters during training" + (" (EMA weights)" if ema else ""), fontsize=11)
    legend_beside(fig, handles=handles)
    return save_figure(fig, out, dpi=130, tight=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.timeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="OUTPUT", help="run folder, or LABEL=DIR1,DIR2 for seeds")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--ema", action="store_true", help="the EMA weights' census")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    if not args.out.lower().endswith(".png"):
        parser.error(f"--out must be a .png file, got {args.out!r}")
    try:
        path = plot_timeline(parse_groups(args.runs), Path(args.out), ema=args.ema, title=args.title)
    except (ValueError, KeyError) as err:
        parser.error(str(err))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

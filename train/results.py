"""``python -m train.results LABEL=DIR1,DIR2,... [LABEL2=...] --out FOLDER``: compare settings over seeds.

For each setting (the runs of one recipe under different seeds) it reports top-1 as mean +- std over seeds at every
epoch, the clustered share and family shares of the last census, the depthwise parameter count, for DoGConv2d runs
the share of channels the classifier names as the family they are built of, and the median wall time of a run, and
writes into FOLDER: ``results.md`` (the tables, ready for the README), ``results.json``, ``timeline.png`` (Appendix
G: family shares against epoch, side by side), ``accuracy.png`` (top-1 against epoch, mean +- std), ``layers.png``
(per-layer cluster shares at the end, mean over seeds: the paper's Fig. 7) and ``runs/<run>/`` with each run's
config.yaml, metrics.jsonl and census.jsonl, so the figures can be redrawn without the checkpoints.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from dog_init.files import atomic_path

from .config import ConfigError, apply_overrides, load_recipe
from .jsonl import JsonLines
from .timeline import STACK, load_census, parse_groups, plot_timeline

__all__ = ["summarise", "write_results"]

_FAMILIES = STACK[:-1]   # families + "other"


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{str(run)!r} has no metrics.jsonl; has it finished an epoch?")
    return JsonLines(path, key=("epoch",)).read()


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _depthwise_params(run: Path) -> int | None:
    """Trainable depthwise parameters of the run's model, rebuilt from its config.yaml (no weights needed)."""
    from dog_init import depthwise_stats

    from .models import build_model
    try:
        cfg = load_recipe(run / "config.yaml")
        apply_overrides(cfg, [("model.checkpoint", "null"), ("init.profile", "null")])
        model, _ = build_model(cfg, num_classes=cfg.data.num_classes)
        return depthwise_stats(model)["depthwise_params"]
    except (ConfigError, ValueError, RuntimeError):   # e.g. a model only its weights file can build: no column
        return None


def summarise(groups: dict[str, list[Path]]) -> dict:
    """Per setting: seeds, per-epoch top-1 mean / std, final census shares mean / std, time."""
    out = {}
    for label, runs in groups.items():
        metrics = [_metrics(r) for r in runs]
        epochs = min(len(m) for m in metrics)
        if epochs == 0:
            raise ValueError(f"{label}: a run has no finished epoch")
        censuses = [load_census(r) for r in runs]
        finals = [[c for c in lines if c.get("kind", "epoch") == "epoch"][-1] for lines in censuses]
        initial = [lines[0] for lines in censuses]
        seeds = [load_recipe(r / "config.yaml").train.seed for r in runs]
        out[label] = {
            "runs": [str(r) for r in runs], "seeds": seeds, "epochs": epochs,
            "top1": [_mean_std([m[e]["top1"] for m in metrics]) for e in range(epochs)],
            "top5": [_mean_std([m[e]["top5"] for m in metrics]) for e in range(epochs)],
            "clustered_initial": _mean_std([c["clustered"] for c in initial]),
            "clustered": _mean_std([c["clustered"] for c in finals]),
            "families": {f: _mean_std([c["families"].get(f, 0.0) for c in finals]) for f in _FAMILIES},
            "final_epoch": finals[0]["epoch"],
            "layers": _layer_means(finals),
            "minutes": float(np.median([sum(x["epoch_seconds"] for x in m) / 60 for m in metrics])),
            "images_per_s": _mean_std([np.mean([x["images_per_s"] for x in m]) for m in metrics]),
            "depthwise_params": _depthwise_params(runs[0]),
            # DoGConv2d runs: the share of channels the classifier names as the family they are built of
            "dogconv_agreement": (_mean_std([c["dogconv_agreement"] for c in finals])
                                  if all("dogconv_agreement" in c for c in finals) else None),
        }
    return out


def _layer_means(finals: list[dict]) -> list[dict]:
    layers = finals[0]["layers"]
    return [{"name": layers[i]["name"], **{f: float(np.mean([c["layers"][i]["families"].get(f, 0.0)
                                                                for c in finals])) for f in _FAMILIES}}
            for i in range(len(layers))]


def _fmt(pair, scale: float = 1.0, digits: int = 1) -> str:
    mean, std = pair
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def markdown(summary: dict) -> str:
    labels = list(summary)
    epochs = min(s["epochs"] for s in summary.values())
    lines = ["| epoch | " + " | ".join(f"{label} top-1 %" for label in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for e in range(epochs):
        lines.append(f"| {e + 1} | " + " | ".join(_fmt(summary[label]["top1"][e]) for label in labels) + " |")
    lines += ["", "| setting | seeds | top-1 % (last epoch) | clustered % at init | clustered % (last epoch) | "
              + " | ".join(f.replace("_", " ") for f in _FAMILIES) + " | depthwise params | classifier names the DoGConv2d family % | minutes / run (median) |",
              "|---|---|---|---|---|" + "---|" * len(_FAMILIES) + "---|---|---|"]
    for label, s in summary.items():
        lines.append(f"| {label} | {', '.join(map(str, s['seeds']))} | {_fmt(s['top1'][-1])} | "
                     f"{_fmt(s['clustered_initial'], 100)} | {_fmt(s['clustered'], 100)} | "
                     + " | ".join(_fmt(s["families"][f], 100) for f in _FAMILIES)
                     + f" | {s['depthwise_params'] if s['depthwise_params'] is not None else 'n/a'} | "
                     f"{_fmt(s['dogconv_agreement'], 100) if s.get('dogconv_agreement') else '-'} | "
                     f"{s['minutes']:.0f} |")
    return "\n".join(lines) + "\n"


def _plot_accuracy(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from analysis import save_figure
    fig, ax = plt.subplots(figsize=(8.0, 4.4))
    for k, (label, s) in enumerate(summary.items()):
        x = np.arange(1, s["epochs"] + 1)
        mean, std = np.array(s["top1"]).T
        colour, dashes = f"C{k % 10}", "-" if k < 10 else "--"   # ten colours, then dashed lines
        ax.plot(x, mean, dashes, color=colour, marker="o", markersize=3, label=f"{label} (n={len(s['runs'])})")
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))   # beside: many arms
    ax.set_title("Top-1 per epoch, mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130, tight=False)


def _plot_layers(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from analysis import PALETTE, legend_beside, panel_grid, pretty, save_figure
    fig, axes = panel_grid(len(summary), panel_size=(3.6, 3.6), ylabel="share of the layer's kernels")
    for i, (ax, (label, s)) in enumerate(zip(axes, summary.items())):
        x = np.arange(len(s["layers"]))
        bottom = np.zeros(len(x))
        for f in _FAMILIES:
            share = np.array([layer[f] for layer in s["layers"]])
            ax.bar(x, share, bottom=bottom, color=PALETTE[f], width=0.85, label=pretty(f) if i == 0 else None)
            bottom += share
        ax.bar(x, 1 - bottom, bottom=bottom, color=PALETTE["unclustered"], width=0.85,
               label="unclustered" if i == 0 else None)
        ax.set_xticks(x)
        ax.set_xlabel("depthwise layer")
        ax.set_title(f"{label}, epoch {s['final_epoch']}", fontsize=10)
        ax.set_ylim(0, 1)
    fig.suptitle("Cluster shares per layer at the end (mean over seeds)", fontsize=11)
    legend_beside(fig)
    save_figure(fig, path, dpi=130, tight=False)


def write_results(groups: dict[str, list[Path]], out: Path) -> dict:
    summary = summarise(groups)   # every input is checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    for runs in groups.values():
        for run in runs:
            dest = out / "runs" / run.name
            dest.mkdir(parents=True, exist_ok=True)
            for name in ("config.yaml", "metrics.jsonl", "census.jsonl"):
                shutil.copy2(run / name, dest / name)
    for name, text in (("results.json", json.dumps(summary, indent=1)), ("results.md", markdown(summary))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    plot_timeline(groups, out / "timeline.png", title="Kernel clusters during training (CIFAR-10)")
    _plot_accuracy(summary, out / "accuracy.png")
    _plot_layers(summary, out / "layers.png")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="+", metavar="LABEL=DIR1,DIR2", help="runs of one setting over seeds")
    parser.add_argument("--out", required=True, type=Path, help="folder for the tables and figures")
    args = parser.parse_args(argv)
    try:
        write_results(parse_groups(args.groups), args.out)
    except (ValueError, KeyError) as err:
        parser.error(str(err))
    print((args.out / "results.md").read_text())
    print(f"wrote {args.out}/results.md, results.json, timeline.png, accuracy.png, layers.png, runs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

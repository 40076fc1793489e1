"""The census of a model's depthwise kernels, and ``python -m train.census OUTPUT [OUTPUT ...]``, which takes a
finished run's epoch censuses again from its checkpoints.

A census extracts every depthwise kernel of the (unwrapped) model, classifies each size through analysis's census
loop (``analysis.take_census``: the bundled classifier of the size, every odd size from 3; an even size or 1 is
reported once and skipped) and records the shares of the paper's clusters (Babaiee et al., ICLR 2024, Sec. 4 and Appendix G): one
``census.jsonl`` line

    {"epoch", "step", "kind": "epoch" | "step", "clustered", "families": {family: share}, "degenerate",
     "kernels", "sizes": {"K": {"clustered", "families", "degenerate", "kernels"}},
     "layers": [{"name", "kernel_size", "clustered", "families", "degenerate"}], "ema": {...}}

with shares of all classified kernels in 0..1 (``families`` includes ``other``, clustered kernels that match no
family, so ``clustered == sum(families)``).

The re-census:
Useful after the bundled classifiers change (``make classifiers``), or to census a run trained with the census off.
Epoch 0 is the initial model, rebuilt from the run's ``config.yaml`` (construction and initialisation are seeded,
so it is the model the run started from); epoch N is ``checkpoints/epoch_N``. Epochs whose checkpoint was pruned
(``train.keep_last``) and step censuses keep their old lines, and are listed. ``census.jsonl`` is rewritten
atomically; TensorBoard events are left as they are. EMA shares are not recomputed.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis import OTHER, ClassifierChoice, extract_depthwise, read_state_dict, take_census
from dog_init import FAMILIES, DoGConv2d, bake_

from .checkpoint import MANIFEST, epoch_folders
from .config import ConfigError, load_recipe
from .jsonl import JsonLines
from .models import build_model

__all__ = ["FAMILY_KEYS", "Census", "CensusResult", "recensus", "count_classes"]

FAMILY_KEYS = (*FAMILIES, OTHER)


@dataclass
class CensusResult:
    record: dict            # the census.jsonl fields of one model (no epoch / step)
    layers: list[tuple[str, int, np.ndarray, np.ndarray]]   # (name, k, kernels (n, k, k), labels (n,)) model order
    seconds: float


class Census:
    """Classifies a model's depthwise kernels through analysis's census loop (``analysis.take_census``: the
    bundled classifier of each odd size; an even size is reported once and skipped)."""

    def __init__(self, log=print, fit: bool = False):
        self.choice = ClassifierChoice(log=log)   # loaded classifiers are kept for the whole run
        self.fit = fit   # also fit the DoG formula (analysis.fit_families) to kernels of 5x5 and up

    def measure(self, model: nn.Module) -> CensusResult:
        # A census must not move the training's random streams (loading a classifier builds an autoencoder, whose
        # layers draw their initial weights): a resumed run would otherwise diverge after its first census.
        with torch.random.fork_rng(devices=[]):
            return self._measure(model)

    def _measure(self, model: nn.Module) -> CensusResult:
        start = time.perf_counter()
        designed = {name: np.array(m.channel_families) for name, m in model.named_modules()
                    if isinstance(m, DoGConv2d)}
        if designed:
            model = bake_(copy.deepcopy(model))   # the kernels DoGConv2d layers apply, as plain convs
        census = take_census(extract_depthwise(model), self.choice)
        fits = {str(k): _fit_summary(size.group.kernels) for k, size in census.sizes.items()
                if self.fit and k >= 5}   # at 3x3 the closed forms fit almost any 9 pixels
        layers = [(layer.name, layer.kernel_size, layer.kernels, layer.labels) for layer in census.layers]
        all_labels = census.labels()
        skipped = {s["size"]: s["n_kernels"] for s in census.skipped}
        record = {**_shares(all_labels), "kernels": int(len(all_labels)),
                  "sizes": {str(k): {**_shares(size.labels), "kernels": len(size.labels)}
                            for k, size in census.sizes.items()},
                  "layers": [{"name": name, "kernel_size": k, **_shares(lab)} for name, k, _, lab in layers]}
        agreeing = [(lab == designed[name]) for name, _, _, lab in layers if name in designed]
        if agreeing:   # a DoGConv2d channel cannot leave its family: does the classifier name that family?
            record["dogconv_agreement"] = float(np.concatenate(agreeing).mean())
        if skipped:
            record["skipped_sizes"] = {str(k): n for k, n in sorted(skipped.items())}
        if fits:
            record["fit"] = fits
        return CensusResult(record, layers, time.perf_counter() - start)


def _fit_summary(kernels: np.ndarray) -> dict:
    """Median fitted centre sigma (pixels) and residual per family (``FamilyFit.summary``); NaN as null."""
    from analysis import fit_families
    summary = fit_families(kernels, steps=100).summary()
    return {family: {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in values.items()}
            for family, values in summary.items() if values["count"]}


def _shares(labels: np.ndarray) -> dict:
    n = max(len(labels), 1)
    families = {f: float(np.count_nonzero(labels == f)) / n for f in FAMILY_KEYS}
    return {"clustered": float(np.count_nonzero(np.isin(labels, FAMILY_KEYS))) / n, "families": families,
            "degenerate": float(np.count_nonzero(labels == "degenerate")) / n}


def count_classes(cfg) -> int:
    """The number of classes the run's data have (what its classifier head was built with)."""
    d = cfg.data
    if d.name == "synthetic":
        return d.num_classes
    if d.name == "ffcv":
        from .data import sidecar
        return len(json.loads(sidecar(Path(d.root) / f"{d.train_split}.beton").read_text())["classes"])
    from .data import check_image_folder
    return sum(1 for p in check_image_folder(d.root, d.train_split).iterdir() if p.is_dir())


def recensus(run: Path, log=print) -> list[dict]:
    """Recompute ``run``'s epoch censuses; returns the new census lines."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{str(run)!r} is not a run folder (no config.yaml)")
    cfg = load_recipe(run / "config.yaml")
    with torch.random.fork_rng(devices=[]):
        model, _ = build_model(cfg, count_classes(cfg))
    census, lines = Census(log), JsonLines(run / "census.jsonl")
    old = lines.read()
    checkpoints = {epoch: p for epoch, p in epoch_folders(run) if (p / MANIFEST).is_file()}
    kept = []
    for record in old:
        epoch, kind = record["epoch"], record.get("kind", "epoch")
        if kind == "epoch" and (epoch == 0 or epoch in checkpoints):
            if epoch > 0:   # keys of compiled / DDP-wrapped models carry _orig_mod. / module.: stripped on reading
                model.load_state_dict(read_state_dict(checkpoints[epoch] / "model.safetensors"))
            fresh = census.measure(model.eval()).record
            record = {**{k: v for k, v in record.items() if k != "ema"}, **fresh}
        else:
            kept.append(f"{kind} {epoch} (step {record['step']})")
        lines.append(record)
    if kept:
        log(f"{run}: kept the old lines of {', '.join(kept)} (no checkpoint to recompute them from)")
    return lines.read()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.census", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="OUTPUT", help="run folders of python -m train")
    args = parser.parse_args(argv)
    for run in args.runs:
        if not (run / "census.jsonl").is_file():
            parser.error(f"{str(run)!r} has no census.jsonl")
    for run in args.runs:
        try:
            new = recensus(run)
        except ConfigError as err:
            parser.error(str(err))
        print(f"{run}: " + ", ".join(f"epoch {r['epoch']} {100 * r['clustered']:.1f}%" for r in new
                                     if r.get("kind", "epoch") == "epoch"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

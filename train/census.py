"""``python -m train.census OUTPUT [OUTPUT ...]``: take a finished run's epoch censuses again, from its checkpoints.

Useful after the bundled classifiers change (``make classifiers``), or to census a run trained with the census off.
Epoch 0 is the initial model, rebuilt from the run's ``config.yaml`` (construction and initialisation are seeded,
so it is the model the run started from); epoch N is ``checkpoints/epoch_N``. Epochs whose checkpoint was pruned
(``train.keep_last``) and step censuses keep their old lines, and are listed. ``census.jsonl`` is rewritten
atomically; TensorBoard events are left as they are. EMA shares are not recomputed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from analysis.sources import read_state_dict

from .checkpoint import MANIFEST, epoch_folders
from .config import ConfigError, load_recipe
from .models import build_model
from .tracking import Census, JsonLines

__all__ = ["recensus", "count_classes"]


def count_classes(cfg) -> int:
    """The number of classes the run's data have (what its classifier head was built with)."""
    d = cfg.data
    if d.name == "synthetic":
        return d.num_classes
    if d.name == "ffcv":
        from .write_ffcv import sidecar
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

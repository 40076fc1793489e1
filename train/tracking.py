"""The cluster census and the run's logs: ``census.jsonl``, ``metrics.jsonl`` and TensorBoard.

A census extracts every depthwise kernel of the (unwrapped) model, classifies each size with the bundled
``KernelClassifier.pretrained(k)`` (a size without one is reported once and skipped) and records the shares of the
paper's clusters (Babaiee et al., ICLR 2024, Sec. 4 and Appendix G): one ``census.jsonl`` line

    {"epoch", "step", "kind": "epoch" | "step", "clustered", "families": {family: share}, "degenerate",
     "kernels", "layers": [{"name", "kernel_size", "clustered", "families", "degenerate"}], "ema": {...}}

with shares of all classified kernels in 0..1 (``families`` includes ``other``, clustered kernels that match no
family, so ``clustered == sum(families)``). Only the main process measures and writes. The JSONL files are
rewritten atomically (temp file + rename) with one line per (kind, epoch, step): a resumed run replaces the lines
it recomputes instead of repeating them, and ``TensorBoard``'s ``purge_step`` hides the stale events.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis import KernelClassifier, available_pretrained, extract_depthwise
from analysis.labels import OTHER
from dog_init import FAMILIES, DoGConv2d, bake_, depthwise_stats, find_depthwise
from dog_init.preview import atomic_path

__all__ = ["FAMILY_KEYS", "JsonLines", "Census", "CensusResult", "Tracker"]

FAMILY_KEYS = (*FAMILIES, OTHER)


class JsonLines:
    """A small JSONL log rewritten atomically; each record is keyed so that writing it twice keeps one line."""

    def __init__(self, path: Path, key=("kind", "epoch", "step")):
        self.path, self.key = Path(path), key

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:   # a line cut short by a crash: the run that resumes rewrites it
                continue
        return records

    def _write(self, records: list[dict]) -> None:
        # JSON has no NaN / Infinity: a non-finite number is written as null, which every parser reads.
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(_finite(r), allow_nan=False) + "\n" for r in records))

    def keep_until(self, step: int) -> None:
        """Drop records after ``step`` (those a resumed run will write again)."""
        if self.path.is_file():
            self._write([r for r in self.read() if r.get("step", 0) <= step])

    def append(self, record: dict) -> None:
        key = tuple(record.get(k) for k in self.key)
        self._write([r for r in self.read() if tuple(r.get(k) for k in self.key) != key] + [record])


def _finite(value):
    """``value`` with every non-finite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass
class CensusResult:
    record: dict            # the census.jsonl fields of one model (no epoch / step)
    layers: list[tuple[str, int, np.ndarray, np.ndarray]]   # (name, k, kernels (n, k, k), labels (n,)) model order
    seconds: float


class Census:
    """Classifies a model's depthwise kernels with the bundled classifiers, one per kernel size."""

    def __init__(self, log=print, fit: bool = False):
        self.log, self._classifiers, self._available = log, {}, set(available_pretrained())
        self.fit = fit   # also fit the DoG formula (analysis.fit_families) to kernels of 5x5 and up

    def classifier(self, k: int) -> KernelClassifier | None:
        if k not in self._classifiers:
            self._classifiers[k] = KernelClassifier.pretrained(k) if k in self._available else None
            if self._classifiers[k] is None:
                self.log(f"census: no bundled classifier for {k}x{k} kernels (available: "
                         f"{sorted(self._available)}); {k}x{k} layers are skipped")
        return self._classifiers[k]

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
        order = [name for name, _ in find_depthwise(model)[0]]
        kernels = extract_depthwise(model)
        per_layer, skipped, fits = {}, {}, {}
        for group in kernels:
            clf = self.classifier(group.size)
            if clf is None:
                skipped[group.size] = len(group)
                continue
            result = clf.classify(group.kernels)
            labels = np.where(result.degenerate, "degenerate", result.labels)
            if self.fit and group.size >= 5:   # at 3x3 the closed forms fit almost any 9 pixels
                fits[str(group.size)] = _fit_summary(group.kernels)
            for i, name in enumerate(group.layer_names):
                rows = group.layer_index == i
                per_layer[name] = (group.size, group.kernels[rows], labels[rows])
        layers = [(name, *per_layer[name]) for name in order if name in per_layer]
        all_labels = np.concatenate([lab for *_, lab in layers]) if layers else np.zeros(0, str)
        record = {**_shares(all_labels), "kernels": int(len(all_labels)),
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


class Tracker:
    """The run's logs. Every method is a no-op off the main process, so callers need no rank checks."""

    def __init__(self, out_dir: Path, accelerator, *, tensorboard: bool = True, figures: bool = True,
                 histograms: bool = True, samples_per_family: int = 8, fit: bool = False,
                 resume_step: int | None = None, log=print):
        self.main = accelerator.is_main_process
        self.out_dir, self.figures, self.histograms = Path(out_dir), figures, histograms
        self.samples_per_family, self.log = samples_per_family, log
        self.census_log = JsonLines(self.out_dir / "census.jsonl")
        self.metrics_log = JsonLines(self.out_dir / "metrics.jsonl", key=("epoch",))
        self.census = Census(log, fit=fit) if self.main else None
        self.writer = None
        if not self.main:
            return
        # Lines after the step we restart from are recomputed by this run; a fresh start recomputes all.
        start = -1 if resume_step is None else resume_step
        self.census_log.keep_until(start)
        self.metrics_log.keep_until(start)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start + 1)
            self.writer.add_custom_scalars(_layout())

    # ---------------------------------------------------------------------------------------------- scalars
    def scalars(self, values: dict, step: int) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, "    " + text.replace("\n", "\n    "), 0)   # indented: shown verbatim

    def hparams(self, flat_config: dict, metric_tags=("eval/top1", "eval/top5", "clusters/clustered")) -> None:
        """The resolved config as TensorBoard hyper-parameters, in this run's own event file."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams
        for summary in hparams(flat_config, {tag: 0.0 for tag in metric_tags}):
            self.writer.file_writer.add_summary(summary)

    # ---------------------------------------------------------------------------------------------- census
    def take_census(self, model: nn.Module, *, epoch: int, step: int, kind: str = "epoch",
                    ema: nn.Module | None = None) -> dict | None:
        """Classify the kernels of ``model`` (and ``ema``), append the census line, log it; main process only."""
        if not self.main:
            return None
        result = self.census.measure(model)
        record = {"epoch": epoch, "step": step, "kind": kind, **result.record}
        self._log_census(result, step, "clusters")
        if ema is not None:
            ema_result = self.census.measure(ema)
            record["ema"] = {k: v for k, v in ema_result.record.items() if k != "layers"}
            self._log_census(ema_result, step, "clusters_ema", details=False)
        self.census_log.append(record)
        self.scalars({"time/census_s": result.seconds}, step)
        stats = depthwise_stats(model)
        if stats["dogconv_layers"]:   # DoGConv2d: how far the free residual kernels have left the families
            self.scalars({"dogconv/residual_norm": stats["residual_norm"],
                          "dogconv/params": stats["dogconv_params"]}, step)
            if "dogconv_agreement" in record:
                self.scalars({"dogconv/family_agreement": record["dogconv_agreement"]}, step)
        return record

    def _log_census(self, result: CensusResult, step: int, prefix: str, details: bool = True) -> None:
        if self.writer is None:
            return
        r = result.record
        self.scalars({f"{prefix}/clustered": r["clustered"], f"{prefix}/degenerate": r["degenerate"],
                      **{f"{prefix}/{f}": share for f, share in r["families"].items()}}, step)
        if not details:
            return
        self.scalars({f"{prefix}/layer_{i}/clustered": layer["clustered"] for i, layer in enumerate(r["layers"])},
                     step)
        for k, families in r.get("fit", {}).items():
            self.scalars({f"fit/k{k}/{family}/{stat}": value for family, values in families.items()
                          for stat, value in values.items() if stat != "count" and value is not None}, step)
        if self.histograms:
            for i, (_, _, kernels, _) in enumerate(result.layers):
                finite = kernels[np.isfinite(kernels)]   # TensorBoard cannot bin NaN / inf
                if finite.size:
                    self.writer.add_histogram(f"depthwise/layer_{i}", finite, step)
        if self.figures and result.layers:
            self._figures(result, step, prefix)

    def _figures(self, result: CensusResult, step: int, prefix: str) -> None:
        from analysis.figures import kernel_mosaic, layer_proportions_figure
        labels = np.concatenate([lab for *_, lab in result.layers])
        index = np.concatenate([np.full(len(lab), i) for i, (*_, lab) in enumerate(result.layers)])
        names = [name for name, *_ in result.layers]
        degenerate = labels == "degenerate"
        self.writer.add_figure(f"{prefix}/layers", layer_proportions_figure(
            np.where(degenerate, "unclustered", labels), index, names, degenerate_mask=degenerate,
            title=f"cluster shares per depthwise layer, step {step}"), step)
        # Sample kernels per cluster as plain images (one per cluster, named by its tag): a matplotlib grid of
        # axes costs more than the rest of the census together.
        rng = np.random.default_rng(0)
        for k in sorted({k for _, k, _, _ in result.layers}):
            kernels = np.concatenate([ker for _, size, ker, _ in result.layers if size == k])
            lab = np.concatenate([lab for _, size, _, lab in result.layers if size == k])
            for name in dict.fromkeys(lab.tolist()):
                rows = np.flatnonzero(lab == name)
                pick = np.sort(rng.choice(rows, min(self.samples_per_family, len(rows)), replace=False))
                self.writer.add_image(f"{prefix}/samples_k{k}/{name}", kernel_mosaic(kernels[pick]), step,
                                      dataformats="HWC")

    # ---------------------------------------------------------------------------------------------- epochs
    def epoch_metrics(self, record: dict) -> None:
        """One metrics.jsonl line per epoch and its eval scalars."""
        if not self.main:
            return
        self.metrics_log.append(record)
        self.scalars({f"eval/{k}": record[k] for k in ("top1", "top5", "eval_loss") if k in record}, record["step"])
        self.scalars({f"eval_ema/{k[4:]}": record[k] for k in ("ema_top1", "ema_top5") if k in record},
                     record["step"])
        self.scalars({"train/epoch_loss": record["train_loss"], "time/epoch_s": record["epoch_seconds"]},
                     record["step"])

    def last_metrics(self) -> dict | None:
        """The newest metrics.jsonl line (what a run resumed past its last epoch returns), or None."""
        records = self.metrics_log.read()
        return max(records, key=lambda r: r.get("epoch", 0)) if records else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _layout() -> dict:
    """TensorBoard custom-scalars layout: every family on one chart, model and EMA side by side."""
    families = [f"clusters/{f}" for f in FAMILY_KEYS]
    return {"clusters": {"family shares": ["Multiline", families],
                         "clustered share": ["Multiline", ["clusters/clustered", "clusters_ema/clustered"]],
                         "EMA family shares": ["Multiline", [f.replace("clusters/", "clusters_ema/")
                                                             for f in families]]},
            "accuracy": {"top-1": ["Multiline", ["eval/top1", "eval_ema/top1"]],
                         "loss": ["Multiline", ["train/loss", "train/epoch_loss", "eval/eval_loss"]]}}

"""The run's logs: ``census.jsonl``, ``metrics.jsonl``, TensorBoard (scalars, hyper-parameters, the custom-scalars
layout, per-layer figures, kernel mosaics, histograms) and the other trackers of ``train.trackers`` (``train.trackers``:
the same scalars and figures through Accelerate).

Only the main process writes. The JSONL files are rewritten atomically (``train.jsonl``) with one line per (kind,
epoch, step): a resumed run replaces the lines it recomputes instead of repeating them, and TensorBoard's
``purge_step`` hides the stale events. What a census line holds is ``train.census``'s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from dog_init import depthwise_stats

from .census import FAMILY_KEYS, Census, CensusResult
from .jsonl import JsonLines
from .trackers import log_image

__all__ = ["Tracker"]

class Tracker:
    """The run's logs. Every method is a no-op off the main process, so callers need no rank checks."""

    def __init__(self, out_dir: Path, accelerator, *, tensorboard: bool = True, figures: bool = True,
                 histograms: bool = True, samples_per_family: int = 8, fit: bool = False,
                 resume_step: int | None = None, ema: bool = False, log=print):
        self.main, self.accelerator = accelerator.is_main_process, accelerator
        self.others = bool(self.main and accelerator.trackers)   # Accelerate trackers (started by the trainer)
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
            self.writer.add_custom_scalars(_layout(ema))

    # ---------------------------------------------------------------------------------------------- scalars
    def scalars(self, values: dict, step: int) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
        if self.others and values:
            self.accelerator.log({tag: float(value) for tag, value in values.items()}, step=step)

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
        if self.writer is None and not self.others:
            return
        r = result.record
        self.scalars({f"{prefix}/clustered": r["clustered"], f"{prefix}/degenerate": r["degenerate"],
                      **{f"{prefix}/{f}": share for f, share in r["families"].items()}}, step)
        if not details:
            return
        if len(r.get("sizes", {})) > 1:   # a model of several kernel sizes (MixNet): each size's shares too
            self.scalars({f"{prefix}/k{k}/{f}": share for k, size in r["sizes"].items()
                          for f, share in {"clustered": size["clustered"], **size["families"]}.items()}, step)
        self.scalars({f"{prefix}/layer_{i}/clustered": layer["clustered"] for i, layer in enumerate(r["layers"])},
                     step)
        for k, families in r.get("fit", {}).items():
            self.scalars({f"fit/k{k}/{family}/{stat}": value for family, values in families.items()
                          for stat, value in values.items() if stat != "count" and value is not None}, step)
        if self.histograms and self.writer is not None:
            for i, (_, _, kernels, _) in enumerate(result.layers):
                finite = kernels[np.isfinite(kernels)]   # TensorBoard cannot bin NaN / inf
                if finite.size:
                    self.writer.add_histogram(f"depthwise/layer_{i}", finite, step)
        if self.figures and result.layers:
            self._figures(result, step, prefix)

    def _figures(self, result: CensusResult, step: int, prefix: str) -> None:
        from analysis import kernel_mosaic, layer_proportions_figure
        labels = np.concatenate([lab for *_, lab in result.layers])
        index = np.concatenate([np.full(len(lab), i) for i, (*_, lab) in enumerate(result.layers)])
        names = [name for name, *_ in result.layers]
        degenerate = labels == "degenerate"
        figure = layer_proportions_figure(np.where(degenerate, "unclustered", labels), index, names,
                                          degenerate_mask=degenerate,
                                          title=f"cluster shares per depthwise layer, step {step}")
        if self.others:
            log_image(self.accelerator, f"{prefix}/layers", figure=figure, step=step)
        if self.writer is not None:
            self.writer.add_figure(f"{prefix}/layers", figure, step)   # closes the figure
        else:
            import matplotlib.pyplot as plt
            plt.close(figure)
        # Sample kernels per cluster as plain images (one per cluster, named by its tag): a matplotlib grid of
        # axes costs more than the rest of the census together.
        rng = np.random.default_rng(0)
        for k in sorted({k for _, k, _, _ in result.layers}):
            kernels = np.concatenate([ker for _, size, ker, _ in result.layers if size == k])
            lab = np.concatenate([lab for _, size, _, lab in result.layers if size == k])
            for name in dict.fromkeys(lab.tolist()):
                rows = np.flatnonzero(lab == name)
                pick = np.sort(rng.choice(rows, min(self.samples_per_family, len(rows)), replace=False))
                mosaic = kernel_mosaic(kernels[pick])
                if self.writer is not None:
                    self.writer.add_image(f"{prefix}/samples_k{k}/{name}", mosaic, step, dataformats="HWC")
                if self.others:
                    log_image(self.accelerator, f"{prefix}/samples_k{k}/{name}", image=mosaic, step=step)

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
        if self.others:
            self.accelerator.end_training()


def _layout(ema: bool = False) -> dict:
    """TensorBoard custom-scalars layout: every family on one chart, the model's and (a run with an EMA census) the
    EMA's side by side; only charts whose tags the run writes, so that none stays empty."""
    families = [f"clusters/{f}" for f in FAMILY_KEYS]
    clusters = {"family shares": ["Multiline", families],
                "clustered share": ["Multiline", ["clusters/clustered"] + (["clusters_ema/clustered"] if ema else [])]}
    if ema:
        clusters["EMA family shares"] = ["Multiline", [f.replace("clusters/", "clusters_ema/") for f in families]]
    return {"clusters": clusters,
            "accuracy": {"top-1": ["Multiline", ["eval/top1"] + (["eval_ema/top1"] if ema else [])],
                         "loss": ["Multiline", ["train/loss", "train/epoch_loss", "eval/eval_loss"]]}}

"""The training run: data, model, DoG initialisation, epochs, evaluation, census, checkpoints, final weights.

``fit(cfg, resume=None)`` is what ``python -m train`` runs (also under ``accelerate launch`` and ``torchrun``).
Order matters for two promises. Nothing is written before the configuration, the data folders and the model have
been checked. And a run killed at any moment and resumed from its newest checkpoint ends exactly as an uninterrupted
one (on the CPU, same seed): the data order is a function of (seed, epoch), every RNG state is in the checkpoint,
worker processes are re-seeded from it each epoch, and the census / metrics lines are keyed so a recomputed line
replaces its twin.
"""
from __future__ import annotations

import copy
import json
import time
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed

from dog_init import bake_
from dog_init.preview import atomic_path

from .checkpoint import CheckpointError, CheckpointManager, save_weights
from .config import Config, ConfigError, flat, to_yaml, validate
from .data import build_data, build_mixup
from .engine import TrainState, build_loss, evaluate, train_one_epoch
from .models import build_model
from .optim import build_optimizer, build_scheduler
from .signals import STOP
from .tracking import Tracker

__all__ = ["fit", "make_accelerator", "output_dir"]


def make_accelerator(cfg: Config) -> Accelerator:
    """CPU (gloo for several processes) when CUDA is absent; seedable per-epoch data order; timm schedulers are
    stepped by the loop, not by Accelerate."""
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.precision,
                       gradient_accumulation_steps=cfg.optim.accumulation, step_scheduler_with_optimizer=False,
                       dynamo_backend="inductor" if cfg.train.compile else None,
                       dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed))


def output_dir(cfg: Config, recipe: str | None) -> Path:
    return Path(cfg.train.output_dir or Path("runs") / (Path(recipe).stem if recipe else "train"))


def _check_output(out: Path, resume: str | None) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output dir {str(out)!r} exists and is not a folder")
    if resume not in (None, "auto"):
        try:
            CheckpointManager.verify(Path(resume))
        except CheckpointError as err:
            raise ConfigError(f"--resume {resume!r}: {err}") from None
    if resume is None and ((out / "config.yaml").exists() or (out / "checkpoints").exists()):
        raise ConfigError(f"output dir {str(out)!r} holds a run; pass --resume auto to continue it or choose "
                          "another --output-dir")


def fit(cfg: Config, resume: str | None = None, recipe: str | None = None) -> dict:
    """Train as ``cfg`` says; returns the last epoch's metrics. Raises ConfigError before writing anything, and
    KeyboardInterrupt on Ctrl-C / SIGTERM (after finishing a checkpoint being written)."""
    STOP.install()
    try:
        return _fit(cfg, resume, recipe)
    finally:
        STOP.uninstall()


def _fit(cfg: Config, resume: str | None, recipe: str | None) -> dict:
    validate(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = output_dir(cfg, recipe)
    _check_output(out, resume)
    accelerator = make_accelerator(cfg)
    say = accelerator.print
    data = build_data(cfg, accelerator)
    model, init_report = build_model(cfg, data.num_classes)
    set_seed(cfg.train.seed, device_specific=True)   # augmentation / mixup streams differ per process

    optimizer = build_optimizer(cfg, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    updates_per_epoch = max(len(data.train) // cfg.optim.accumulation, 1)
    scheduler = build_scheduler(cfg, optimizer, updates_per_epoch)
    ema = None
    if cfg.train.ema:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(accelerator.unwrap_model(model), decay=cfg.train.ema_decay)
    state = TrainState()
    for obj in (scheduler, state) + ((ema,) if ema is not None else ()):
        accelerator.register_for_checkpointing(obj)

    # Everything that can refuse a setting (data, model, optimiser, schedule) has been built: now write.
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if resume is not None and (out / "config.yaml").is_file():
            _warn_changes((out / "config.yaml").read_text(), to_yaml(cfg))
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(to_yaml(cfg))
        if init_report is not None:
            init_report.to_json(out / "init_report.json")

    checkpoints = CheckpointManager(out, accelerator, cfg.train.keep_last)
    checkpoints.clean_partial()
    resumed = checkpoints.load(resume) if resume is not None else None
    say(f"resumed from {resumed} (epoch {state.epoch}, step {state.step})" if resumed else
        f"{'no checkpoint to resume; ' if resume else ''}starting {cfg.model.name} ({_init_label(cfg)}) in {out}")
    say(data.description)
    t = cfg.tracking
    tracker = Tracker(out, accelerator, figures=t.figures, histograms=t.histograms, fit=t.fit,
                      samples_per_family=t.samples_per_family, resume_step=state.step if resumed else None, log=say)
    if not resumed:
        tracker.text("config", to_yaml(cfg))
        tracker.hparams(flat(cfg))
        if init_report is not None:
            tracker.text("init", init_report.summary())

    def census(kind: str) -> dict | None:
        if not t.census:
            return None
        return tracker.take_census(accelerator.unwrap_model(model), epoch=state.epoch, step=state.step, kind=kind,
                                   ema=ema.module if ema is not None and t.ema else None)

    if not resumed:
        census("epoch")
    at_steps = set(t.at_steps)
    mixup = build_mixup(cfg, data.num_classes)
    loss_fn = build_loss(cfg.augment.label_smoothing if cfg.augment.enabled else 0.0, mixup is not None)
    record = {}
    for epoch in range(state.epoch, cfg.train.epochs):
        started = time.perf_counter()
        if hasattr(data.train, "set_epoch"):
            data.train.set_epoch(epoch)
        stats = train_one_epoch(model, data.train, optimizer, scheduler, loss_fn, accelerator, state, epoch=epoch,
                                epochs=cfg.train.epochs, clip_grad=cfg.optim.clip_grad, clip_mode=cfg.optim.clip_mode,
                                mixup=mixup, ema=ema, log_interval=cfg.train.log_interval, log=tracker.scalars,
                                on_step=lambda step: census("step") if step in at_steps else None)
        metrics = evaluate(model, data.val, accelerator, prepared=data.prepared)
        scheduler.step(epoch + 1)   # per-epoch schedules (per-step ones moved with every update)
        if ema is not None:
            ema_metrics = evaluate(ema.module, data.val, accelerator, prepared=data.prepared, desc="eval EMA")
            metrics.update({f"ema_{k}": v for k, v in ema_metrics.items() if k in ("top1", "top5")})
        state.epoch = epoch + 1
        if metrics["top1"] > state.best_top1:
            state.best_top1, state.best_epoch = metrics["top1"], state.epoch
        taken = census("epoch")
        record = {"epoch": state.epoch, "step": state.step, **stats, **metrics,
                  "epoch_seconds": time.perf_counter() - started}
        tracker.epoch_metrics(record)
        say(_epoch_line(record, cfg.train.epochs, taken))
        checkpoints.save(state.epoch, state.step, metrics["top1"], state.best_epoch)
    _finish(cfg, accelerator, model, ema, out, state, say)
    tracker.close()
    return record


def _init_label(cfg: Config) -> str:
    if cfg.init.parameterise == "dog":
        return "DoGConv2d layers" + (" with residual kernels" if cfg.init.residual else "")
    return f"{cfg.init.name} init" + (f", profile {cfg.init.profile}" if cfg.init.profile else "")


def _epoch_line(r: dict, epochs: int, census: dict | None) -> str:
    line = (f"epoch {r['epoch']}/{epochs}  loss {r['train_loss']:.4f}  top1 {r['top1']:.2f}%  top5 {r['top5']:.2f}%"
            + (f"  ema top1 {r['ema_top1']:.2f}%" if "ema_top1" in r else "")
            + (f"  clustered {100 * census['clustered']:.1f}%" if census else "")
            + f"  lr {r['lr']:.2e}  {r['images_per_s']:.0f} img/s  {r['epoch_seconds']:.0f} s")
    return line + (f"  ({r['skipped_images']} unreadable images skipped)" if r["skipped_images"] else "")


def _finish(cfg: Config, accelerator, model, ema, out: Path, state: TrainState, say) -> None:
    """The final weights as safetensors (DoGConv2d layers baked back into plain convs) and where to look."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    meta = {"format": "dog-init-train", "timm_model": cfg.model.name, "model_kwargs": _json(cfg.model.kwargs),
            "epoch": state.epoch, "step": state.step, "best_top1": state.best_top1}
    models = [("model.safetensors", accelerator.unwrap_model(model))]
    models += [("model_ema.safetensors", ema.module)] if ema is not None else []
    for name, module in models:
        if cfg.init.parameterise == "dog":   # DoGConv2d layers back to plain convs: loads into the timm model
            module = bake_(copy.deepcopy(module))
        save_weights(module, out / name, meta)
    say(f"done: weights {out / 'model.safetensors'}, census {out / 'census.jsonl'}, metrics {out / 'metrics.jsonl'}"
        f"\nTensorBoard: tensorboard --logdir {out / 'tensorboard'}")


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


def _warn_changes(old_yaml: str, new_yaml: str) -> None:
    import yaml
    old, new = yaml.safe_load(old_yaml) or {}, yaml.safe_load(new_yaml)
    changed = [f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k) != new[s][k]]
    if changed:
        warnings.warn(f"resuming with a changed configuration: {', '.join(changed)}", stacklevel=3)

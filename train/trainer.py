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
import shlex
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from timm.utils import distribute_bn

from dog_init import InitReport, bake_
from dog_init.files import atomic_path

from .checkpoint import CheckpointError, CheckpointManager, CheckpointMismatch, epoch_folders, save_weights
from .config import Config, ConfigError, flat, to_yaml, validate
from .data import DataBundle, build_data, build_mixup
from .engine import (Diverged, TrainState, build_loss, evaluate, plain_model, skip_batches, stop_agreed,
                     train_one_epoch, updates_per_epoch)
from .models import build_model, check_input_size
from .optim import build_optimizer, build_scheduler, global_batch, peak_lr
from .run_folder import RunFolder, check_start
from .signals import STOP, Preempted
from .trackers import check_trackers, start_trackers
from .tracking import Tracker

__all__ = ["fit", "make_accelerator", "output_dir"]


def make_accelerator(cfg: Config, trackers: bool = True) -> Accelerator:
    """CPU (gloo for several processes) when CUDA is absent; seedable per-epoch data order; timm schedulers are
    stepped by the loop, not by Accelerate; gradient accumulation is the loop's too (``engine.train_one_epoch``);
    ``train.trackers`` other than TensorBoard as ``log_with`` (``trackers=False``: none, for evaluation)."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True   # fixed input shapes: let cuDNN pick its fastest kernels once
    others = check_trackers(cfg.train.trackers) if trackers else []
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.precision,
                       log_with=others or None,
                       step_scheduler_with_optimizer=False,
                       dynamo_backend="inductor" if cfg.train.compile else None,
                       dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed))


def output_dir(cfg: Config, recipe: str | None) -> Path:
    return Path(cfg.train.output_dir or Path("runs") / (Path(recipe).stem if recipe else "train"))


def fit(cfg: Config, resume: str | None = None, recipe: str | None = None, rescale_schedule: bool = False) -> dict:
    """Train as ``cfg`` says; returns the last epoch's metrics.

    Raises ConfigError before writing anything (a bad setting, a run folder in use, a checkpoint that does not fit,
    a resume that changes the batch geometry without ``rescale_schedule``), Diverged when the loss stops being
    finite (the last good checkpoint is kept), and KeyboardInterrupt on Ctrl-C / SIGTERM (after finishing a
    checkpoint being written)."""
    STOP.install()
    try:
        return _fit(cfg, resume, recipe, rescale_schedule)
    finally:
        STOP.uninstall()


def _fit(cfg: Config, resume: str | None, recipe: str | None, rescale_schedule: bool) -> dict:
    validate(cfg)
    check_trackers(cfg.train.trackers)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = output_dir(cfg, recipe)
    check_start(out, resume)
    if resume not in (None, "auto"):
        try:
            CheckpointManager.verify(Path(resume))
        except CheckpointError as err:
            raise ConfigError(f"--resume {resume!r}: {err}") from None
    accelerator = make_accelerator(cfg)
    folder = RunFolder(out, main=accelerator.is_main_process).claim()
    try:
        run = _prepare(cfg, accelerator, out, resume, rescale_schedule)
    except BaseException:
        folder.abandon()   # refused before anything was written: leave the folder as it was
        raise
    try:
        return _train(cfg, accelerator, out, run)
    finally:
        folder.release()


@dataclass
class _Prepared:
    """What ``_prepare`` built and loaded, before anything was written."""
    data: DataBundle
    model: torch.nn.Module              # prepared by Accelerate
    init_report: InitReport | None
    optimizer: torch.optim.Optimizer
    scheduler: object                   # a timm Scheduler
    ema: object | None                  # timm ModelEmaV3
    state: TrainState
    checkpoints: CheckpointManager
    resume: str | None                  # what --resume asked for
    resumed: Path | None                # the checkpoint loaded, if any
    per_epoch: int                      # optimiser updates per epoch


def _prepare(cfg: Config, accelerator, out: Path, resume: str | None, rescale_schedule: bool) -> _Prepared:
    """Everything that can refuse the run, without writing: data, model, optimiser, schedule, the checkpoint."""
    data = build_data(cfg, accelerator)
    model, init_report = build_model(cfg, data.num_classes)
    check_input_size(model, cfg)
    set_seed(cfg.train.seed, device_specific=True)   # augmentation / mixup streams differ per process
    if cfg.model.sync_bn and accelerator.num_processes > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    _check_global_batch(cfg, accelerator)
    optimizer = build_optimizer(cfg, model, accelerator.num_processes)
    model, optimizer = accelerator.prepare(model, optimizer)
    per_epoch = updates_per_epoch(len(data.train), cfg.optim.accumulation)
    scheduler = build_scheduler(cfg, optimizer, per_epoch)
    ema = None
    if cfg.train.ema:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(plain_model(accelerator, model), decay=cfg.train.ema_decay, use_warmup=cfg.train.ema_warmup)
    state = TrainState()
    # The schedule is a function of the configuration and the update count, so it is rebuilt, not restored; its
    # slot stays so that checkpoints keep their layout.
    for obj in (RebuiltOnLoad(scheduler), state) + ((ema,) if ema is not None else ()):
        accelerator.register_for_checkpointing(obj)
    checkpoints = CheckpointManager(out, accelerator, cfg.train.keep_last)
    resumed = None
    if resume is not None:
        try:
            resumed = checkpoints.load(resume)
        except CheckpointMismatch as err:
            raise ConfigError(f"{err}{_model_change(out, cfg)}; nothing in {str(out)!r} was changed") from None
    geometry = {"batch_size": cfg.data.batch_size, "processes": accelerator.num_processes,
                "accumulation": cfg.optim.accumulation, "updates_per_epoch": per_epoch}
    if resumed is not None:
        _check_geometry(state, geometry, resumed, rescale_schedule)
    vars(state).update(geometry)
    scheduler.step(state.epoch)   # the lr where the run stands (per-epoch and per-update schedules alike)
    # Per-update schedules: where the last update left it (mid-epoch, a step checkpoint: that update's own step).
    scheduler.step_update(state.epoch * per_epoch + -(-state.batch // cfg.optim.accumulation))
    return _Prepared(data, model, init_report, optimizer, scheduler, ema, state, checkpoints, resume, resumed,
                     per_epoch)


def _train(cfg: Config, accelerator, out: Path, run: _Prepared) -> dict:
    state, resumed, say = run.state, run.resumed, accelerator.print
    # Everything that can refuse a setting has been built and the checkpoint loaded: now write.
    if accelerator.is_main_process:
        if resumed is not None and (out / "config.yaml").is_file():
            _warn_changes((out / "config.yaml").read_text(), to_yaml(cfg))
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(to_yaml(cfg))
        if run.init_report is not None and resumed is None:
            run.init_report.to_json(out / "init_report.json")
    run.checkpoints.clean_partial()
    say(f"resumed from {resumed} (epoch {state.epoch}, step {state.step})" if resumed else
        f"{'no checkpoint to resume; ' if run.resume else ''}starting {cfg.model.name} "
        f"({_init_label(cfg)}) in {out}")
    say(run.data.description)
    t = cfg.tracking
    start_trackers(accelerator, out, flat(cfg))
    tracker = Tracker(out, accelerator, tensorboard="tensorboard" in cfg.train.trackers, figures=t.figures, histograms=t.histograms, fit=t.fit,
                      samples_per_family=t.samples_per_family, resume_step=state.step if resumed else None,
                      ema=run.ema is not None and t.ema, log=say)
    try:
        record = _epochs(cfg, accelerator, out, run, tracker)
    finally:
        tracker.close()
    return record


def _epochs(cfg: Config, accelerator, out: Path, run: _Prepared, tracker: Tracker) -> dict:
    data, model, scheduler, ema, state = run.data, run.model, run.scheduler, run.ema, run.state
    say, t = accelerator.print, cfg.tracking
    if run.resumed is None:
        tracker.text("config", to_yaml(cfg))
        tracker.hparams(flat(cfg))
        if run.init_report is not None:
            tracker.text("init", run.init_report.summary())

    def census(kind: str) -> dict | None:
        if not t.census:
            return None
        return tracker.take_census(plain_model(accelerator, model), epoch=state.epoch, step=state.step, kind=kind,
                                   ema=ema.module if ema is not None and t.ema else None)

    if run.resumed is None:
        census("epoch")
    at_steps = set(t.at_steps)
    mixup = build_mixup(cfg, data.num_classes)
    loss_fn = build_loss(cfg.augment.label_smoothing if cfg.augment.enabled else 0.0, mixup is not None)
    record = tracker.last_metrics() or {}
    for epoch in range(state.epoch, cfg.train.epochs):
        started = time.perf_counter()
        if hasattr(data.train, "set_epoch"):
            data.train.set_epoch(epoch)   # the order, and SeededSamples' augmentation seeds
        loader = skip_batches(accelerator, data.train, state.batch, epoch) if state.batch else data.train
        try:
            stats = train_one_epoch(
                model, loader, run.optimizer, scheduler, loss_fn, accelerator, state, epoch=epoch,
                epochs=cfg.train.epochs, accumulation=cfg.optim.accumulation, first_update=epoch * run.per_epoch,
                clip_grad=cfg.optim.clip_grad, clip_mode=cfg.optim.clip_mode, mixup=mixup, ema=ema,
                log_interval=cfg.train.log_interval, log=tracker.scalars, check_at=at_steps,
                on_step=lambda step: census("step") if step in at_steps else None, batches=len(data.train),
                checkpoint_every=cfg.train.checkpoint_every_steps,
                save_step=lambda: run.checkpoints.save(state.epoch, state.step, None, state.best_epoch,
                                                       batch=state.batch))
        except Diverged as err:
            raise Diverged(f"{err}; stopped. {_last_good(out)} Lower optim.lr, or set optim.clip_grad", err.step) \
                from None
        state.batch, state.epoch_sums = 0, (0.0, 0.0, 0)
        metrics = evaluate(model, data.val, accelerator, prepared=data.prepared)
        scheduler.step(epoch + 1)   # per-epoch schedules (per-step ones moved with every update)
        if ema is not None:
            if accelerator.num_processes > 1:   # each process's EMA copied its own BatchNorm statistics
                distribute_bn(ema.module, accelerator.num_processes, reduce=True)
            with accelerator.autocast():   # the precision the model is evaluated in
                ema_metrics = evaluate(ema.module, data.val, accelerator, prepared=data.prepared, desc="eval EMA")
            metrics.update({f"ema_{k}": v for k, v in ema_metrics.items() if k in ("top1", "top5", "eval_loss")})
        state.epoch = epoch + 1
        score = metrics["ema_top1" if cfg.train.best_by == "ema" else "top1"]
        if score > state.best_top1:
            state.best_top1, state.best_epoch = score, state.epoch
        taken = census("epoch")
        record = {"epoch": state.epoch, "step": state.step, **stats, **metrics,
                  "epoch_seconds": time.perf_counter() - started}
        tracker.epoch_metrics(record)
        say(_epoch_line(record, cfg.train.epochs, taken))
        folder = run.checkpoints.save(state.epoch, state.step, metrics["top1"], state.best_epoch)
        signum = stop_agreed(accelerator)   # a preemption during the evaluation: this checkpoint is the place
        if signum and state.epoch < cfg.train.epochs:
            raise Preempted(signum, state.step, folder)
    _finish(cfg, accelerator, model, ema, out, state, say)
    return record


class RebuiltOnLoad:
    """A checkpoint slot for an object rebuilt from the configuration: saved for the record, not loaded back."""

    def __init__(self, obj):
        self.obj = obj

    def state_dict(self) -> dict:
        return self.obj.state_dict()

    def load_state_dict(self, state: dict) -> None:
        pass


def _check_global_batch(cfg: Config, accelerator) -> None:
    """Say the global batch and the peak lr; warn when the recipe's lr was tuned for another global batch."""
    batch, lr = global_batch(cfg, accelerator.num_processes), peak_lr(cfg, accelerator.num_processes)
    accelerator.print(f"global batch {batch} = {cfg.data.batch_size} per process x {accelerator.num_processes} "
                      f"process(es) x {cfg.optim.accumulation} accumulation; peak lr {lr:.4g}"
                      + (f" (optim.lr_base {cfg.optim.lr_base:g} x {batch} / {cfg.optim.lr_base_size}"
                         f"{', sqrt' if cfg.optim.lr_base_scale == 'sqrt' else ''})" if cfg.optim.lr_base else ""))
    tuned = cfg.optim.tuned_batch
    if tuned is not None and tuned != batch and accelerator.is_main_process:
        warnings.warn(f"this recipe's learning rate was tuned for a global batch of {tuned}, this run's is {batch}: "
                      f"set data.batch_size / optim.accumulation to match, or give optim.lr_base (with "
                      f"optim.lr_base_size {tuned}) to scale the rate", stacklevel=3)


def _check_geometry(state: TrainState, now: dict, folder: Path, rescale: bool) -> None:
    """ConfigError when the resume changes what the schedule and the data order were built for."""
    names = {"batch_size": "data.batch_size", "processes": "processes", "accumulation": "optim.accumulation",
             "updates_per_epoch": "updates per epoch (the training data changed)"}
    changed = [f"{names[k]} {getattr(state, k)} -> {v}" for k, v in now.items()
               if getattr(state, k) is not None and getattr(state, k) != v]
    if changed and not rescale:
        raise ConfigError(f"resuming {str(folder)!r} changes {', '.join(changed)}: the global batch and the schedule "
                          "would no longer be the run's. Resume with the run's settings, or pass --rescale-schedule to "
                          "continue at the same fraction of the schedule in the new units (not bit-exact)")


def _model_change(out: Path, cfg: Config) -> str:
    """'(the run trained X, this configuration builds Y)' when config.yaml says another model."""
    try:
        import yaml
        old = (yaml.safe_load((out / "config.yaml").read_text()) or {}).get("model", {})
    except (OSError, ValueError, AttributeError):
        return ""
    was = (old.get("name"), old.get("kwargs") or {})
    now = (cfg.model.name, cfg.model.kwargs)
    return "" if was == now else (f" (the run trained model.name {was[0]} with kwargs {was[1]}; this configuration "
                                  f"builds {now[0]} with kwargs {now[1]})")


def _last_good(out: Path) -> str:
    found = [folder for _, folder in epoch_folders(out)]
    return (f"The last good checkpoint, {str(found[0])!r}, is kept (resume with --resume auto)." if found else
            "No checkpoint had been written (it diverged in the first epoch).")


def _init_label(cfg: Config) -> str:
    if cfg.init.parameterise == "dog":
        return "DoGConv2d layers" + (" with residual kernels" if cfg.init.residual else "")
    return (f"{cfg.init.name} init" + (f", profile {cfg.init.profile}" if cfg.init.profile else "")
            + (", depthwise frozen" if cfg.train.freeze_depthwise else ""))


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
    models = [("model.safetensors", plain_model(accelerator, model))]
    models += [("model_ema.safetensors", ema.module)] if ema is not None else []
    for name, module in models:
        if cfg.init.parameterise == "dog":   # DoGConv2d layers back to plain convs: loads into the timm model
            module = bake_(copy.deepcopy(module))
        save_weights(module, out / name, meta)
    say(f"done: weights {out / 'model.safetensors'}, census {out / 'census.jsonl'}, metrics {out / 'metrics.jsonl'}"
        f"\nTensorBoard: tensorboard --logdir {shlex.quote(str(out / 'tensorboard'))}")


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


def _warn_changes(old_yaml: str, new_yaml: str) -> None:
    import yaml
    old, new = yaml.safe_load(old_yaml) or {}, yaml.safe_load(new_yaml)
    changed = [f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k) != new[s][k]]
    if changed:
        warnings.warn(f"resuming with a changed configuration: {', '.join(changed)}", stacklevel=3)

"""Optimiser and learning-rate schedule, from timm's factories; ``onecycle`` is ConvMixer's schedule.

Trockman & Kolter ("Patches Are All You Need?", 2022) train ConvMixers with a triangular one-cycle: the learning
rate rises linearly from 0 to its peak over the first 40 % of the updates, falls linearly to peak / 20 at 80 %,
then to 0 at the end. ``OneCycleScheduler`` is that schedule as a timm ``Scheduler`` (``step_update`` per
optimiser step, ``state_dict`` for checkpoints), so every schedule is driven the same way.
"""
from __future__ import annotations

import numpy as np
import torch
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from .config import Config, ConfigError

__all__ = ["OneCycleScheduler", "build_optimizer", "build_scheduler", "global_batch", "peak_lr", "TIMM_SCHEDULES"]

# timm's plateau schedule is left out: timm deprecates it, and its state is not checkpointed (no exact resume).
TIMM_SCHEDULES = ("cosine", "tanh", "step", "multistep", "poly")


class OneCycleScheduler(Scheduler):
    """Piecewise-linear lr over optimiser updates t = 1..T: ``interp(t, [0, peak T, drop T, T], [0, lr, lr/20, 0])``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_updates: int, peak: float = 0.4, drop: float = 0.8):
        if not 0 < peak < drop < 1:
            raise ConfigError(f"onecycle needs 0 < schedule.onecycle_peak < schedule.onecycle_drop < 1, got "
                              f"{peak} and {drop}")
        self.total_updates, self.knots = int(total_updates), [0.0, peak * total_updates, drop * total_updates,
                                                              float(total_updates)]
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=False, initialize=True)
        self.update_groups(self._get_lr(0))

    def _get_lr(self, t: int) -> list[float]:
        # Update t (0-based) uses the rate at t + 1, as ConvMixer's loop does: the first step does not waste lr = 0.
        return [float(np.interp(t + 1, self.knots, [0.0, base, base / 20, 0.0])) for base in self.base_values]


def global_batch(cfg: Config, processes: int) -> int:
    """Images per optimiser update: per-process batch x processes x accumulation."""
    return cfg.data.batch_size * processes * cfg.optim.accumulation


def peak_lr(cfg: Config, processes: int) -> float:
    """``optim.lr``, or with ``optim.lr_base`` timm's rule: lr_base x (global batch / lr_base_size), the ratio
    square-rooted when ``optim.lr_base_scale`` is sqrt."""
    o = cfg.optim
    if o.lr_base is None:
        return o.lr
    ratio = global_batch(cfg, processes) / o.lr_base_size
    return o.lr_base * (ratio ** 0.5 if o.lr_base_scale == "sqrt" else ratio)


def build_optimizer(cfg: Config, model: torch.nn.Module, processes: int = 1) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2`` at ``peak_lr``: biases and norm weights get no weight decay."""
    o = cfg.optim
    if o.name.lower() not in list_optimizers():
        raise ConfigError(f"optim.name {o.name!r} is not a timm optimiser; e.g. adamw, lamb, sgd, adam, rmsprop "
                          f"(timm.optim.list_optimizers())")
    extra = {"eps": o.eps} if o.eps is not None else {}
    return create_optimizer_v2(model, opt=o.name, lr=peak_lr(cfg, processes), weight_decay=o.weight_decay,
                               momentum=o.momentum, **extra)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, updates_per_epoch: int) -> Scheduler:
    """The schedule of ``cfg.schedule`` over ``cfg.train.epochs`` epochs of ``updates_per_epoch`` optimiser steps."""
    s = cfg.schedule
    if s.name == "onecycle":
        return OneCycleScheduler(optimizer, cfg.train.epochs * updates_per_epoch, s.onecycle_peak, s.onecycle_drop)
    if s.name not in TIMM_SCHEDULES:
        raise ConfigError(f"schedule.name must be one of {', '.join(TIMM_SCHEDULES)}, onecycle; got {s.name!r}")
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=s.name, num_epochs=cfg.train.epochs, decay_epochs=s.decay_epochs,
        decay_milestones=list(s.decay_milestones), decay_rate=s.decay_rate, min_lr=s.min_lr, warmup_lr=s.warmup_lr,
        warmup_epochs=s.warmup_epochs, step_on_epochs=not s.per_step, updates_per_epoch=updates_per_epoch)
    return scheduler

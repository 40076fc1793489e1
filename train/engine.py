"""One training epoch and one evaluation, driven by Accelerate (devices, precision, accumulation, processes).

``train_one_epoch`` keeps the loss on the device and reads it only at log intervals, so the loop adds no
synchronisation to a bare PyTorch loop (``benchmarks/trainer.py`` measures the ratio). ``evaluate`` scores the whole
validation set exactly once across processes: prepared loaders pad the last batches, ``gather_for_metrics`` drops
the padding.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Callable, Collection

import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from tqdm.auto import tqdm

from .signals import STOP

__all__ = ["TrainState", "Diverged", "build_loss", "updates_per_epoch", "train_one_epoch", "evaluate",
           "plain_model", "stop_agreed", "STOP_POLL"]

STOP_POLL = 10   # several processes agree on a preemption every STOP_POLL updates (one process: every update)


@dataclass
class TrainState:
    """Counters saved with every checkpoint (``accelerator.register_for_checkpointing``)."""
    epoch: int = 0             # completed epochs
    step: int = 0              # optimiser steps taken
    best_top1: float = -1.0    # best validation top-1 so far (the model's or the EMA's: train.best_by), %
    best_epoch: int = -1
    # The run's geometry, which fixes its schedule and data order: a resume that changes it is refused
    # (``--rescale-schedule`` accepts it). None in checkpoints written before these were recorded.
    batch_size: int | None = None      # per process
    processes: int | None = None
    accumulation: int | None = None
    updates_per_epoch: int | None = None
    # Mid-epoch (step) checkpoints: micro-batches of epoch ``epoch`` already trained (0 at an epoch's end) and the
    # epoch's running sums over all processes so far (loss x images, images, skipped images).
    batch: int = 0
    epoch_sums: tuple = (0.0, 0.0, 0)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def build_loss(label_smoothing: float, mixup: bool) -> torch.nn.Module:
    """Soft-target cross-entropy under mixup / cutmix (timm's Mixup smooths the targets itself), else (smoothed)
    cross-entropy."""
    if mixup:
        return SoftTargetCrossEntropy()
    return LabelSmoothingCrossEntropy(label_smoothing) if label_smoothing > 0 else torch.nn.CrossEntropyLoss()


class Diverged(RuntimeError):
    """The loss or the weights stopped being finite; ``step`` is the first optimiser step whose loss was not."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def updates_per_epoch(batches: int, accumulation: int) -> int:
    """Optimiser updates in an epoch of ``batches`` micro-batches: ceil(batches / accumulation), the last window
    shorter when ``accumulation`` does not divide ``batches`` (as timm's train.py)."""
    return max(-(-batches // accumulation), 1)


def train_one_epoch(model, loader, optimizer, scheduler, loss_fn, accelerator, state: TrainState, *, epoch: int,
                    epochs: int, accumulation: int = 1, first_update: int = 0, clip_grad: float | None = None,
                    clip_mode: str = "norm", mixup=None, ema=None, log_interval: int = 50,
                    log: Callable[[dict, int], None] | None = None, on_step: Callable[[int], None] | None = None,
                    check_at: Collection[int] = (), batches: int | None = None,
                    save_step: Callable[[], object] | None = None, checkpoint_every: int | None = None) -> dict:
    """Train ``model`` for one pass over ``loader``; returns the epoch's mean loss, last lr, images/s, skips.

    Mid-epoch: ``loader`` may start ``state.batch`` micro-batches into an epoch of ``batches`` (a resumed step
    checkpoint; its loss sums come from ``state.epoch_sums``). ``save_step`` writes a step checkpoint (after
    ``state.batch`` / ``state.epoch_sums`` are set): every ``checkpoint_every`` updates, and on a preemption
    (``stop_agreed``), after which ``signals.Preempted`` is raised.

    Gradients are accumulated over windows of ``accumulation`` micro-batches, the last window of the epoch over
    what is left; each window's loss is divided by its own length, so every update averages its micro-batches.
    Windows never cross an epoch (any loader: prepared, FFCV). The schedule is at update ``first_update + u`` after
    the epoch's u-th update. A non-finite loss is noticed without a device sync per step (a flag on the device, read
    at the log interval, at the ``check_at`` steps and at the end, all processes together) and raises ``Diverged``.
    """
    model.train()
    device = accelerator.device
    start_batch = state.batch
    batches = len(loader) + start_batch if batches is None else batches
    # A resumed epoch's sums so far are the main process's: the epoch's reduction over processes adds them once.
    carried = state.epoch_sums if start_batch and accelerator.is_main_process else (0.0, 0.0, 0)
    total_loss = torch.tensor(float(carried[0]), device=device)
    seen = torch.tensor(float(carried[1]), device=device)
    skipped = torch.tensor(int(carried[2]), dtype=torch.long, device=device)
    first_bad = torch.full((), _NONE, dtype=torch.long, device=device)   # first micro-batch with a non-finite loss
    window_loss, window_n, window_images = torch.zeros((), device=device), 0, 0
    window_start = start = time.perf_counter()
    images, updates = 0, -(-start_batch // accumulation)
    first_step = state.step - updates
    averaged = plain_model(accelerator, model) if ema is not None else None   # what the EMA follows
    bar = tqdm(_seed_draw_forked(loader), desc=f"epoch {epoch + 1}/{epochs}", total=batches, initial=start_batch,
               leave=False, dynamic_ncols=True, disable=not accelerator.is_main_process)

    def checkpoint(done: int):
        _check_finite(accelerator, first_bad, first_step, accumulation, epoch, model=model)   # never save NaNs
        sums = [accelerator.reduce(t.clone(), "sum").item() for t in (total_loss, seen, skipped)]
        state.batch, state.epoch_sums = done, (sums[0], sums[1], int(sums[2]))
        return save_step()

    for i, (x, y, n_bad) in enumerate(bar, start=start_batch):
        STOP.check()   # a Ctrl-C that Python dropped inside a __del__ still ends the run here
        batch = len(x)
        if mixup is not None:
            x, y = mixup(x, y)
        opened = i - i % accumulation
        window = min(accumulation, batches - opened)
        sync = i + 1 == opened + window
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            loss = loss_fn(model(x), y)
            accelerator.backward(loss / window if window > 1 else loss)
        if sync:
            if clip_grad is not None:
                if clip_mode == "value":
                    accelerator.clip_grad_value_(model.parameters(), clip_grad)
                else:
                    accelerator.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        detached = loss.detach()
        first_bad = torch.where((first_bad == _NONE) & ~torch.isfinite(detached), i, first_bad)
        total_loss += detached * batch
        seen += batch
        skipped += n_bad
        window_loss += detached
        window_n += 1
        window_images += batch * accelerator.num_processes
        images += batch * accelerator.num_processes
        if not sync:
            continue
        state.step += 1
        updates += 1
        scheduler.step_update(num_updates=first_update + updates)
        if ema is not None:
            ema.update(averaged, step=state.step)
        if state.step % log_interval == 0:
            _check_finite(accelerator, first_bad, first_step, accumulation, epoch)
            now = time.perf_counter()
            stats = {"train/loss": (window_loss / window_n).item(), "train/lr": optimizer.param_groups[0]["lr"],
                     "train/images_per_s": window_images / max(now - window_start, 1e-9)}
            bar.set_postfix(loss=f"{stats['train/loss']:.3f}", lr=f"{stats['train/lr']:.2e}",
                            img_s=f"{stats['train/images_per_s']:.0f}")
            if log is not None:
                log(stats, state.step)
            window_loss.zero_()
            window_n, window_images, window_start = 0, 0, now
        elif state.step in check_at:
            _check_finite(accelerator, first_bad, first_step, accumulation, epoch)
        if on_step is not None:
            on_step(state.step)
        if save_step is None:
            continue
        saved = None
        if checkpoint_every and state.step % checkpoint_every == 0 and i + 1 < batches:
            saved = checkpoint(i + 1)
        signum = stop_agreed(accelerator, state.step)
        if signum:
            from .signals import Preempted
            raise Preempted(signum, state.step, saved or checkpoint(i + 1))
    bar.close()
    _check_finite(accelerator, first_bad, first_step, accumulation, epoch, model=model)
    seconds = time.perf_counter() - start
    total_loss, seen, skipped = (accelerator.reduce(t, "sum") for t in (total_loss, seen, skipped))
    return {"train_loss": (total_loss / seen.clamp_min(1)).item(), "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": images / max(seconds, 1e-9), "train_seconds": seconds, "skipped_images": int(skipped)}


_NONE = 2**62   # "no bad micro-batch yet": larger than any index, so the minimum over processes is the first bad one


def stop_agreed(accelerator, step: int | None = None) -> int | None:
    """The preemption signal every process acts on at optimiser step ``step`` (None: go on). One process reads its
    flag at every update; several reduce theirs every ``STOP_POLL`` updates (one small all-reduce), so that they
    all stop at the same step; ``step=None``: reduce now (a point all processes reach together)."""
    if accelerator.num_processes == 1:
        return STOP.preempted
    if step is not None and step % STOP_POLL:
        return None
    flag = torch.tensor([STOP.preempted or 0], device=accelerator.device)
    return int(accelerator.reduce(flag, "max").item()) or None


def skip_batches(accelerator, loader, n: int, epoch: int):
    """``loader`` (this epoch's order) without its first ``n`` batches: Accelerate's ``skip_first_batches`` for a
    DataLoader (the skipped ones are never loaded), else (FFCV) the first ``n`` batches are read and dropped."""
    if isinstance(loader, torch.utils.data.DataLoader):
        skipped = accelerator.skip_first_batches(loader, n)
        if hasattr(skipped, "set_epoch"):
            skipped.set_epoch(epoch)
        return skipped
    return _Dropped(loader, n)


class _Dropped:
    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return max(len(self.loader) - self.n, 0)

    def __iter__(self):
        it = iter(self.loader)
        for _ in zip(range(self.n), it):
            pass
        yield from it


def _seed_draw_forked(loader):
    """``loader``'s batches, its iterator started under ``fork_rng``: starting one draws the workers' base seed from
    torch's global generator, which would move the training's random streams (dropout, drop-path) differently in a
    run resumed mid-epoch than in one that started the epoch (augmentation is seeded per image: ``SeededSamples``)."""
    it = iter(loader)
    with torch.random.fork_rng(devices=[]):
        first = next(it, None)
    if first is None:
        return
    yield first
    yield from it


def _check_finite(accelerator, first_bad: torch.Tensor, first_step: int, accumulation: int, epoch: int,
                  model=None) -> None:
    """Diverged, on every process alike, when some process saw a non-finite loss (or holds non-finite weights)."""
    flags = first_bad.view(1)
    if model is not None:
        finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()   # one device sync
        flags = torch.cat([flags, (~finite).long().view(1)])
    gathered = accelerator.gather(flags).view(-1, len(flags))
    first = int(gathered[:, 0].min())
    if first != _NONE:
        step = first_step + first // accumulation + 1
        raise Diverged(f"the training loss was not finite at optimiser step {step} (epoch {epoch + 1})", step)
    if model is not None and int(gathered[:, 1].max()):
        raise Diverged(f"the weights hold non-finite values after epoch {epoch + 1} although every loss was "
                       "finite", first_step + 1)


def plain_model(accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The model without Accelerate's wrappers (DDP, mixed precision) and without ``torch.compile``'s
    ``OptimizedModule``, whose state-dict keys carry ``_orig_mod.``: what the EMA copies, the census reads and the
    final weights are saved from."""
    model = accelerator.unwrap_model(model)
    return getattr(model, "_orig_mod", model)


@torch.no_grad()
def evaluate(model, loader, accelerator, *, prepared: bool = True, desc: str = "eval", tta: bool = False) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over the whole validation set, each image counted once.

    tta: average the logits of each image and its horizontal mirror (test-time augmentation "flip").

    prepared: the loader was prepared by ``accelerator`` (padding dropped by ``gather_for_metrics``); otherwise each
        process holds a disjoint shard (FFCV) and the sums are reduced.
    """
    model.eval()
    device = accelerator.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)   # correct@1, correct@5, loss, count
    for x, y, _ in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_main_process):
        logits = model(x).float()
        if tta:
            logits = (logits + model(x.flip(3)).float()) / 2
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == y.view(-1, 1)
        c1, c5 = hit[:, 0], hit.any(dim=1)
        if prepared:
            c1, c5, loss = accelerator.gather_for_metrics((c1, c5, loss))
        sums += torch.stack([c1.sum(), c5.sum(), loss.sum(), torch.tensor(len(c1), device=device)]).double()
    if not prepared:
        sums = accelerator.reduce(sums, "sum")
    n = max(sums[3].item(), 1.0)
    return {"top1": 100 * sums[0].item() / n, "top5": 100 * sums[1].item() / n, "eval_loss": sums[2].item() / n,
            "eval_images": int(sums[3].item())}

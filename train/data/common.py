"""What both image paths of ``train.data`` share: the ``DataBundle`` the trainer gets, class-balanced subsets, timm's
transforms and mixup, per-image seeded augmentation (``SeededSamples``), the collate functions that skip or refill
unreadable images, and the DataLoader worker options by which Ctrl-C / SIGTERM to the process group stop a run
resumably.
"""
from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.context
import os
import random
import signal
import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from torch.utils.data import DataLoader, Dataset, default_collate

from ..config import Config, ConfigError

__all__ = ["DataBundle", "UnreadableImage", "SeededSamples", "balanced_subset", "build_transforms", "build_mixup",
           "with_safe_posterize", "posterize_zero_bits",
           "collate_skipping", "collate_refilling", "worker_options"]


@dataclass
class DataBundle:
    train: DataLoader            # yields (images, targets, n_skipped)
    val: DataLoader
    num_classes: int
    n_train: int
    n_val: int
    description: str
    prepared: bool = True        # False for FFCV loaders, which shard themselves


class SeededSamples(Dataset):
    """``dataset[i]`` with python's, numpy's and torch's global generators seeded from (seed, epoch, i) for the call
    and restored after it: an image's augmentation depends on nothing but the run's seed, the epoch and the image, not
    on which worker loads it or how many images that worker loaded before. So a run resumed in the middle of an
    epoch (``accelerator.skip_first_batches``) augments every later image exactly as an uninterrupted run does. The
    epoch comes from ``set_epoch``, which Accelerate's prepared loader calls on its dataset every epoch."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):   # without workers this runs in the training process itself
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py)
                np.random.set_state(npy)


class UnreadableImage(RuntimeError):
    """An image file that PIL cannot decode, or whose pixels have no 8-bit meaning; the message starts with its
    path."""


def balanced_subset(targets, n: int | None, num_classes: int, seed: int, what: str) -> np.ndarray | None:
    """Indices of a fixed subset of ``n`` items, ``n // C`` per class (the first ``n % C`` classes one more),
    drawn with ``seed``; None for the whole set."""
    if n is None:
        return None
    targets = np.asarray(targets)
    if n < num_classes:
        raise ConfigError(f"data.{what}_subset {n} is smaller than the number of classes ({num_classes})")
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(targets == c)
        want = n // num_classes + (c < n % num_classes)
        if want > len(members):
            raise ConfigError(f"data.{what}_subset {n} needs {want} images of class {c} but it has {len(members)}")
        picks.append(rng.choice(members, want, replace=False))
    return np.sort(np.concatenate(picks))


# ------------------------------------------------------------------------------------------ transforms
def build_transforms(cfg: Config):
    """(train, eval) transforms from timm: random-resized crop, flip, RandAugment, random erasing; resize + crop."""
    d, a = cfg.data, cfg.augment
    common = dict(input_size=d.img_size, interpolation=d.interpolation, mean=tuple(d.mean), std=tuple(d.std))
    evaluation = create_transform(is_training=False, crop_pct=d.crop_pct, **common)
    if not a.enabled:
        return evaluation, evaluation
    train = create_transform(is_training=True, scale=tuple(a.scale), ratio=tuple(a.ratio), hflip=a.hflip,
                             color_jitter=a.color_jitter or None, auto_augment=a.auto_augment, re_prob=a.re_prob,
                             re_mode=a.re_mode, **common)
    return with_safe_posterize(train), evaluation


def with_safe_posterize(transform):
    """``transform`` (timm's) with every posterize op of its RandAugment / AutoAugment ``posterize_zero_bits``."""
    for op in getattr(transform, "transforms", []):
        for aug in getattr(op, "ops", []):
            if getattr(aug, "name", "").startswith("Posterize"):
                aug.aug_fn = posterize_zero_bits
    return transform


def posterize_zero_bits(img: Image.Image, bits_to_keep: int, **_):
    """timm's posterize, where keeping 0 bits gives a black image, as Pillow < 11 did. timm's increasing-magnitude
    posterize asks for 0 bits at magnitude 10 (``rand-m9-mstd0.5-inc1`` draws it about 2 % of the time), which
    Pillow 11 and later refuse with a ValueError that would stop the run."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, int(bits_to_keep))


def build_mixup(cfg: Config, num_classes: int) -> Mixup | None:
    a = cfg.augment
    if not a.enabled or (a.mixup <= 0 and a.cutmix <= 0):
        return None
    return Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.mixup_prob, switch_prob=a.mixup_switch_prob,
                 label_smoothing=a.label_smoothing, num_classes=num_classes)


def _readable(batch: list) -> list:
    good = [item for item in batch if item is not None]
    if not good:
        raise UnreadableImage(f"every image of a batch of {len(batch)} was unreadable; check the data folder")
    return good


def collate_skipping(batch):
    """Evaluation collation: the readable items only (a stand-in would count an image twice in the accuracy); the
    third element counts the items skipped as unreadable."""
    good = _readable(batch)
    images, targets = default_collate(good)
    return images, targets, torch.tensor(len(batch) - len(good))


def collate_refilling(batch):
    """Training collation: each unreadable item takes a copy of the batch's readable items in turn (first hole the
    first readable item, second the second, ...), so every batch keeps its size: timm's Mixup pairs images and
    needs an even batch, and compiled graphs and cudnn plans keep one shape. The third element counts the holes."""
    good = _readable(batch)
    holes = 0
    filled = []
    for item in batch:
        if item is None:
            item, holes = good[holes % len(good)], holes + 1
        filled.append(item)
    images, targets = default_collate(filled)
    return images, targets, torch.tensor(holes)


# ------------------------------------------------------------------------------------------ worker signals
# Ctrl-C and SIGTERM sent to the whole process group (a terminal, SLURM, `kill -TERM -PGID`) would end the DataLoader
# workers first, and the main process would die of "DataLoader worker killed" instead of stopping resumably (it
# shuts its workers down itself, and workers exit when their parent dies). But the parent's own SIGTERM must still
# end a worker: it is multiprocessing's terminate(), which torch and the interpreter's exit use on workers that did
# not stop, and a worker ignoring it hangs the parent's exit.
_STOPS = {signal.SIGINT, signal.SIGTERM}


class _ForkProcessHoldingStops(multiprocessing.context.ForkProcess):
    """A forked worker born with SIGINT and SIGTERM blocked, so a stop signal in the instant before its
    ``worker_init_fn`` runs waits for it instead of killing it."""

    def start(self) -> None:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)   # a signal that came meanwhile reaches us now


class _ForkContextHoldingStops(multiprocessing.context.ForkContext):
    Process = _ForkProcessHoldingStops


def _ignore_stops_but_parents(parent: int, worker_id: int) -> None:
    """``worker_init_fn``: ignore SIGINT, and every SIGTERM not sent by ``parent`` (blocked, read by a thread)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})          # drops one held since the fork
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})           # threads started from now inherit it
    threading.Thread(target=_obey_sigterm_from, args=(parent,), name="sigterm", daemon=True).start()


def _obey_sigterm_from(parent: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
        pass      # the process group's: the main process stops and shuts this worker down
    os._exit(0)   # the parent's terminate(); status 0, so the parent's SIGCHLD check sees no crashed worker


def worker_options(workers: int) -> dict:
    """DataLoader options for ``workers`` processes: a ``worker_init_fn`` by which workers ignore SIGINT and any
    SIGTERM but their parent's, and (where workers fork) a context that forks them with both signals held. Both
    draw no random numbers, so torch's per-worker seeding, and resumed runs, are unchanged. Nothing without workers,
    or without ``signal.sigwaitinfo`` (macOS), where the sender of a SIGTERM cannot be read."""
    if workers == 0 or not hasattr(signal, "sigwaitinfo"):
        return {}
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    return dict(worker_init_fn=functools.partial(_ignore_stops_but_parents, os.getpid()),
                multiprocessing_context=_ForkContextHoldingStops() if method == "fork" else None)

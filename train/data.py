"""Training and validation data: ImageNet-style image folders, FFCV ``.beton`` files (``train.ffcv_data``), and a
synthetic set for the demo and the tests, all through timm's transforms and mixup.

Everything that can be checked before training is checked when the data are built (missing folders, splits without
classes, empty class folders, classes that differ between splits, symlink loops), with a message naming the path.
An image that cannot be decoded during training (or has pixels with no 8-bit meaning, e.g. floats) raises
``UnreadableImage`` naming the file, or, with ``data.skip_bad``, is skipped and counted (the count travels with each
batch and is logged): evaluation batches drop it, training batches refill its place from the same batch.
"""
from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.context
import os
import signal
import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from timm.data import Mixup, create_transform
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from .config import Config, ConfigError
from .image_files import CheckedImageFolder, UnreadableImage, check_image_folder, class_files, load_image

__all__ = ["DataBundle", "UnreadableImage", "SyntheticImages", "CheckedImageFolder", "check_image_folder",
           "class_files", "load_image", "balanced_subset", "build_transforms", "build_data", "build_mixup",
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


# ------------------------------------------------------------------------------------------ datasets
class SyntheticImages(Dataset):
    """Images whose class is the orientation of a grating: class c of C is oriented at 180 c / C degrees (+- 3),
    under a Gaussian window at a random place, with random frequency, phase, colour, contrast and pixel noise.

    An oriented edge is exactly what first-derivative DoG kernels detect, so a small ConvMixer learns it in a few
    hundred steps. Image ``i`` depends only on (seed, split, i): the same in every process and every epoch.
    """

    def __init__(self, n: int, num_classes: int, size: int, *, split: str, seed: int = 0, transform=None):
        if n < num_classes or num_classes < 2:
            raise ConfigError(f"synthetic data need num_classes >= 2 and at least one image per class, got "
                              f"{n} images for {num_classes} classes")
        self.n, self.num_classes, self.size, self.transform = n, num_classes, size, transform
        self.key = [seed, {"train": 0, "val": 1}.get(split, 2)]
        self.targets = [i % num_classes for i in range(n)]
        self.classes = [f"orientation_{round(180 * c / num_classes)}" for c in range(num_classes)]

    def __len__(self) -> int:
        return self.n

    def image(self, index: int) -> Image.Image:
        rng = np.random.default_rng(self.key + [index])
        s = self.size
        theta = np.pi * self.targets[index] / self.num_classes + rng.normal(0.0, np.deg2rad(3.0))
        cycles = rng.uniform(2.0, 5.0) / s                      # cycles per pixel
        y, x = np.mgrid[0:s, 0:s].astype(np.float32) - (s - 1) / 2
        u = x * np.cos(theta) + y * np.sin(theta)
        grating = np.sin(2 * np.pi * cycles * u + rng.uniform(0, 2 * np.pi))
        cx, cy = rng.uniform(-s / 5, s / 5, size=2)
        window = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (s / 4) ** 2))
        pattern = rng.uniform(0.5, 1.0) * grating * window
        colour = rng.uniform(0.3, 1.0, size=3)
        img = 0.5 + 0.4 * pattern[..., None] * colour + rng.normal(0.0, 0.12, size=(s, s, 3))
        return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))

    def __getitem__(self, index: int):
        img = self.image(index)
        return (self.transform(img) if self.transform else img), self.targets[index]


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
    return train, evaluation


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


def _check_mixup_batch(cfg: Config) -> None:
    a = cfg.augment
    if a.enabled and (a.mixup > 0 or a.cutmix > 0) and cfg.data.batch_size % 2:
        raise ConfigError(f"data.batch_size {cfg.data.batch_size} must be even for mixup / cutmix (timm's Mixup "
                          "pairs images)")


# ------------------------------------------------------------------------------------------ loaders
def _datasets(cfg: Config, train_tf, eval_tf):
    d = cfg.data
    if d.name == "synthetic":
        train = SyntheticImages(d.synthetic_train, d.num_classes, d.img_size, split="train", transform=train_tf)
        val = SyntheticImages(d.synthetic_val, d.num_classes, d.img_size, split="val", transform=eval_tf)
        return train, val, d.num_classes, "synthetic oriented gratings"
    train_dir, val_dir = check_image_folder(d.root, d.train_split), check_image_folder(d.root, d.val_split)
    train_classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    val_classes = sorted(p.name for p in val_dir.iterdir() if p.is_dir())
    if train_classes != val_classes:
        only = sorted(set(train_classes) ^ set(val_classes))
        raise ConfigError(f"{str(train_dir)!r} and {str(val_dir)!r} have different class folders, e.g. {only[:5]}")
    train = CheckedImageFolder(train_dir, train_tf, skip_bad=d.skip_bad)
    val = CheckedImageFolder(val_dir, eval_tf, skip_bad=d.skip_bad)
    return train, val, len(train.classes), f"image folder {d.root}"


def build_data(cfg: Config, accelerator) -> DataBundle:
    """Loaders for ``cfg.data``, prepared by ``accelerator`` (sharded per process, seedable order per epoch)."""
    d = cfg.data
    _check_mixup_batch(cfg)
    if d.name == "ffcv":
        from .ffcv_data import build_ffcv
        return build_ffcv(cfg, accelerator)
    train_tf, eval_tf = build_transforms(cfg)
    train, val, num_classes, what = _datasets(cfg, train_tf, eval_tf)
    subsets = [balanced_subset(ds.targets, n, num_classes, d.subset_seed, name)
               for ds, n, name in ((train, d.train_subset, "train"), (val, d.val_subset, "val"))]
    train, val = (Subset(ds, idx.tolist()) if idx is not None else ds for ds, idx in zip((train, val), subsets))
    per_step = d.batch_size * accelerator.num_processes
    if len(train) < per_step:
        raise ConfigError(f"{len(train)} training images are fewer than one step's batch ({d.batch_size} x "
                          f"{accelerator.num_processes} processes); lower data.batch_size")
    # Workers are not persistent: each epoch's workers are seeded from the restored RNG, so a resumed run draws
    # exactly the augmentations an uninterrupted one would.
    common = dict(num_workers=d.workers, pin_memory=torch.cuda.is_available(), **worker_options(d.workers))
    train_loader = DataLoader(train, batch_size=d.batch_size, shuffle=True, drop_last=True,
                              collate_fn=collate_refilling, **common)
    val_loader = DataLoader(val, batch_size=d.eval_batch_size or 2 * d.batch_size, shuffle=False,
                            collate_fn=collate_skipping, **common)
    train_loader, val_loader = accelerator.prepare(train_loader, val_loader)
    return DataBundle(train_loader, val_loader, num_classes, len(train), len(val),
                      f"{what}: {len(train)} train / {len(val)} val images, {num_classes} classes, "
                      f"{len(train_loader)} batches of {d.batch_size} per process per epoch, "
                      f"{accelerator.num_processes} process(es)")

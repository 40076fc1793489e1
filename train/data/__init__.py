"""Training and validation data: ImageNet-style image folders, FFCV ``.beton`` files (``train.data.ffcv``), and a
synthetic set for the demo and the tests, all through timm's transforms and mixup.

Everything that can be checked before training is checked when the data are built (missing folders, splits without
classes, empty class folders, classes that differ between splits, symlink loops), with a message naming the path.
An image that cannot be decoded during training (or has pixels with no 8-bit meaning, e.g. floats) raises
``UnreadableImage`` naming the file, or, with ``data.skip_bad``, is skipped and counted (the count travels with each
batch and is logged): evaluation batches drop it, training batches refill its place from the same batch.

Modules: ``common`` (what both paths share: DataBundle, subsets, transforms, mixup, collation, worker signals),
``image_folder``, ``synthetic``, ``ffcv`` and ``write_ffcv`` (``python -m train.write_ffcv``); ``build_data`` here
dispatches to the torchvision or the FFCV path. Every public name of these modules is importable from
``train.data``.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset

from ..config import Config, ConfigError
from .common import (DataBundle, SeededSamples, UnreadableImage, balanced_subset, build_mixup, build_transforms,
                     collate_refilling, collate_skipping, worker_options)
from .ffcv import FfcvLoader, build_ffcv
from .image_folder import CheckedImageFolder, check_image_folder, class_files, load_image
from .synthetic import SyntheticImages
from .write_ffcv import sidecar, write_beton

__all__ = ["DataBundle", "UnreadableImage", "SyntheticImages", "CheckedImageFolder", "check_image_folder",
           "class_files", "load_image", "balanced_subset", "build_transforms", "build_data", "build_mixup",
           "collate_skipping", "collate_refilling", "worker_options", "SeededSamples", "build_ffcv", "FfcvLoader",
           "write_beton", "sidecar"]


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
    # Workers are not persistent: a new epoch's workers get the dataset copy whose SeededSamples epoch is set.
    options = dict(num_workers=d.workers, pin_memory=torch.cuda.is_available(), **worker_options(d.workers))
    train_loader = DataLoader(SeededSamples(train, cfg.train.seed), batch_size=d.batch_size, shuffle=True,
                              drop_last=True,
                              collate_fn=collate_refilling, **options)
    val_loader = DataLoader(val, batch_size=d.eval_batch_size or 2 * d.batch_size, shuffle=False,
                            collate_fn=collate_skipping, **options)
    train_loader, val_loader = accelerator.prepare(train_loader, val_loader)
    return DataBundle(train_loader, val_loader, num_classes, len(train), len(val),
                      f"{what}: {len(train)} train / {len(val)} val images, {num_classes} classes, "
                      f"{len(train_loader)} batches of {d.batch_size} per process per epoch, "
                      f"{accelerator.num_processes} process(es)")

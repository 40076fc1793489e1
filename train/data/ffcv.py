"""FFCV loaders for ``data.name: ffcv``: ``data.root/<split>.beton`` files written by ``python -m train.write_ffcv``.

The same crop and flip as the torchvision path (random-resized crop with ``augment.scale`` / ``ratio``, horizontal
flip; evaluation centre crop of ``data.crop_pct``), decoded by FFCV's compiled pipelines. RandAugment, colour jitter
and random erasing, which FFCV has no operation for, run on the device after loading, batch-wise
(``train.data.batch_augment``). FFCV's workers are threads of one persistent pool. Several processes: training
uses FFCV's distributed order (seeded, per epoch); evaluation gives each process a disjoint slice, and the sums are
reduced, so every image is counted once.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import Config, ConfigError
from .batch_augment import BatchAugment
from .common import DataBundle, balanced_subset
from .write_ffcv import sidecar

__all__ = ["build_ffcv", "FfcvLoader"]


class FfcvLoader:
    """An FFCV ``Loader`` that yields ``(images, targets, n_skipped=0)`` like the torchvision path, its images through
    ``augment`` (uint8 in, normalised float out) where given."""

    def __init__(self, loader, augment=None):
        self.loader, self.augment = loader, augment

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.next_epoch = epoch   # FFCV seeds each epoch's order with seed + epoch

    def __iter__(self):
        for images, labels in self.loader:
            if self.augment is not None:
                images = self.augment(images)
            yield images, labels, torch.zeros((), dtype=torch.long)


def _files(cfg: Config) -> tuple[Path, Path, dict]:
    d = cfg.data
    if not d.root or not Path(d.root).is_dir():
        raise ConfigError(f"data.root {d.root!r} must be a folder holding {d.train_split}.beton and "
                          f"{d.val_split}.beton (write them with python -m train.write_ffcv)")
    paths = [Path(d.root) / f"{split}.beton" for split in (d.train_split, d.val_split)]
    for p in paths:
        if not p.is_file() or not sidecar(p).is_file():
            raise ConfigError(f"{str(p)!r} or its .json sidecar is missing; write it with python -m "
                              f"train.write_ffcv --src IMAGEFOLDER/{p.stem} --out {p} --max-res N")
    metas = [json.loads(sidecar(p).read_text()) for p in paths]
    if metas[0]["classes"] != metas[1]["classes"]:
        raise ConfigError(f"{paths[0]} and {paths[1]} were written from different classes")
    return paths[0], paths[1], {"train": metas[0], "val": metas[1]}


def build_ffcv(cfg: Config, accelerator) -> DataBundle:
    try:
        from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder, RandomResizedCropRGBImageDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import NormalizeImage, RandomHorizontalFlip, Squeeze, ToDevice, ToTensor, ToTorchImage
    except ImportError as err:
        raise ConfigError(f"data.name ffcv needs the ffcv extra ({err}); pip install -e '.[ffcv]'") from None
    d, a = cfg.data, cfg.augment
    augment = None
    if a.enabled and (a.auto_augment or a.re_prob > 0 or a.color_jitter > 0):
        try:
            augment = BatchAugment(d.mean, d.std, auto_augment=a.auto_augment, color_jitter=a.color_jitter,
                                   re_prob=a.re_prob, re_mode=a.re_mode)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    train_file, val_file, meta = _files(cfg)
    classes = meta["train"]["classes"]
    device = accelerator.device
    mean, std = np.array(d.mean) * 255, np.array(d.std) * 255
    to_torch = [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage(channels_last=cfg.model.channels_last)]
    normalise = NormalizeImage(mean, std, np.float32)
    # FFCV's own layout normalises on the GPU; on the CPU that order sends FFCV 1.0's stage planner into an endless
    # loop, so there the compiled (numpy) stage normalises before the tensors are made.
    tail = to_torch + [normalise] if device.type == "cuda" else [normalise] + to_torch
    labels = [IntDecoder(), ToTensor(), Squeeze(), ToDevice(device, non_blocking=True)]
    size = (d.img_size, d.img_size)
    if a.enabled:
        train_images = [RandomResizedCropRGBImageDecoder(size, scale=tuple(a.scale), ratio=tuple(a.ratio))]
        train_images += [RandomHorizontalFlip(a.hflip)] if a.hflip > 0 else []
    else:
        train_images = [CenterCropRGBImageDecoder(size, ratio=d.crop_pct)]
    train_images += to_torch if augment is not None else tail   # BatchAugment normalises after augmenting
    subsets = {split: balanced_subset(meta[split]["labels"], n, len(classes), d.subset_seed, split)
               for split, n in (("train", d.train_subset), ("val", d.val_subset))}
    n_val = len(meta["val"]["labels"]) if subsets["val"] is None else len(subsets["val"])
    val_index = np.arange(n_val) if subsets["val"] is None else subsets["val"]
    common = dict(num_workers=max(d.workers, 1), os_cache=True)
    train = Loader(str(train_file), batch_size=d.batch_size, order=OrderOption.RANDOM, seed=cfg.train.seed,
                   distributed=accelerator.num_processes > 1, drop_last=True,
                   indices=None if subsets["train"] is None else subsets["train"].tolist(),
                   pipelines={"image": train_images, "label": labels}, **common)
    val = Loader(str(val_file), batch_size=d.eval_batch_size or 2 * d.batch_size, order=OrderOption.SEQUENTIAL,
                 drop_last=False, indices=val_index[accelerator.process_index::accelerator.num_processes].tolist(),
                 pipelines={"image": [CenterCropRGBImageDecoder(size, ratio=d.crop_pct)] + tail, "label": labels},
                 **common)
    n_train = len(meta["train"]["labels"]) if subsets["train"] is None else len(subsets["train"])
    return DataBundle(FfcvLoader(train, augment), FfcvLoader(val), len(classes), n_train, n_val,
                      f"FFCV {d.root}: {n_train} train / {n_val} val images, {len(classes)} classes, "
                      f"{len(train)} batches of {d.batch_size} per process per epoch", prepared=False)

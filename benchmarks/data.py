"""Images per second of the FFCV loader against torchvision's ImageFolder + DataLoader, on the CIFAR-10 JPEGs.

Both do the same work per image: decode, random-resized crop to 32 px (scale 0.08-1), horizontal flip, normalise,
batch of 256 as a float tensor (NCHW), with the same number of worker processes / threads (``--workers``). The
torchvision side is the trainer's own path (``train.data``: CheckedImageFolder, timm's ``create_transform``,
``collate_skipping``); the FFCV side reads a ``.beton`` written by ``train.write_ffcv`` (not timed, kept in
``--cache``). Each loader runs one warm-up pass (FFCV compiles its pipeline then), and the second pass is timed.
Target: FFCV >= 2x. Skipped, with the reason, where the ffcv extra is absent.

``--augment``: both sides also do the ImageNet recipes' RandAugment (rand-m9-mstd0.5-inc1) and random erasing
(0.25, pixel): timm's per-image PIL ops in the DataLoader workers, against ``train.data.BatchAugment`` on the
batches FFCV delivers (on this CPU here; on a GPU in the training run).

    python benchmarks/data.py --quick [--augment]     # 5,000 training images (500 per class)
    python benchmarks/data.py                         # all 50,000
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine  # noqa: E402  (benchmarks/, beside this script)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from analysis.classify.bundle import shared_kernels_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ZIP = shared_kernels_dir().parent / "cifar10-jpeg.zip"   # $DOG_INIT_SHARED_DATA, default ../shared/data
TARGET, BATCH, SIZE = 2.0, 256, 32
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def image_folder(cache: Path, per_class: int | None) -> Path:
    """``cache/images_<n>/train/<class>/*.jpg``: the first ``per_class`` JPEGs of every class from the zip."""
    folder = cache / f"images_{per_class or 'all'}" / "train"
    if folder.is_dir():
        return folder
    tmp = folder.parent.with_name(folder.parent.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(ZIP) as z:
        members = sorted(m for m in z.namelist() if m.startswith("cifar10/train/") and m.endswith(".jpg"))
        taken: dict[str, int] = {}
        for m in members:
            cls = m.split("/")[2]
            if per_class is None or taken.get(cls, 0) < per_class:
                taken[cls] = taken.get(cls, 0) + 1
                dest = tmp / "train" / cls / m.rsplit("/", 1)[1]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(z.read(m))
    tmp.rename(folder.parent)
    return folder


AUTO_AUGMENT, RE_PROB = "rand-m9-mstd0.5-inc1", 0.25


def torchvision_pass(folder: Path, workers: int, augment: bool) -> tuple[int, float]:
    from timm.data import create_transform
    from torch.utils.data import DataLoader

    from train.data import CheckedImageFolder, collate_skipping
    from train.data.common import with_safe_posterize
    extra = dict(auto_augment=AUTO_AUGMENT, re_prob=RE_PROB, re_mode="pixel") if augment else {}
    tf = create_transform(SIZE, is_training=True, scale=(0.08, 1.0), hflip=0.5, color_jitter=None, mean=MEAN,
                          std=STD, **extra)
    tf = with_safe_posterize(tf)   # what the trainer does (Pillow >= 11 refuses timm's 0-bit posterize)
    loader = DataLoader(CheckedImageFolder(folder, tf), batch_size=BATCH, shuffle=True, drop_last=True,
                        num_workers=workers, collate_fn=collate_skipping)
    return _timed(loader)


def ffcv_pass(folder: Path, cache: Path, workers: int, augment: bool) -> tuple[int, float]:
    from ffcv.fields.decoders import IntDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import NormalizeImage, RandomHorizontalFlip, Squeeze, ToTensor, ToTorchImage

    from train.data import write_beton
    from train.data.batch_augment import BatchAugment
    from train.data.ffcv import FfcvLoader
    beton = cache / f"{folder.parent.name}.beton"
    if not beton.is_file():
        write_beton(folder, beton, max_res=SIZE, write_mode="jpg", workers=workers)
    pipeline = [RandomResizedCropRGBImageDecoder((SIZE, SIZE), scale=(0.08, 1.0)), RandomHorizontalFlip()]
    pipeline += [ToTensor(), ToTorchImage()] if augment else [
        NormalizeImage(np.array(MEAN) * 255, np.array(STD) * 255, np.float32), ToTensor(), ToTorchImage()]
    loader = Loader(str(beton), batch_size=BATCH, num_workers=workers, order=OrderOption.RANDOM, seed=0,
                    drop_last=True, pipelines={"image": pipeline, "label": [IntDecoder(), ToTensor(), Squeeze()]})
    if augment:   # what the trainer's FFCV path does: uint8 batches through BatchAugment
        loader = FfcvLoader(loader, BatchAugment(MEAN, STD, auto_augment=AUTO_AUGMENT, re_prob=RE_PROB))
    return _timed(loader)


def _timed(loader) -> tuple[int, float]:
    for _ in loader:   # warm-up pass: worker start-up, FFCV's pipeline compilation
        pass
    images, start = 0, time.perf_counter()
    for batch in loader:
        images += len(batch[0])
        assert batch[0].dtype == torch.float32 and batch[0].shape[1:] == (3, SIZE, SIZE)
    return images, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="loader workers (both sides)")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench_data", help="extracted images, betons")
    parser.add_argument("--quick", action="store_true", help="5,000 images instead of 50,000")
    parser.add_argument("--augment", action="store_true", help="also RandAugment + random erasing (both sides)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("ffcv") is None:
        print("skipped: the ffcv extra is not installed (pip install -e '.[ffcv]', after pkg-config, "
              "libopencv-dev and libturbojpeg0-dev)")
        return 0
    if not ZIP.is_file():
        print(f"skipped: {ZIP} not found (the CIFAR-10 JPEGs of ../shared/data)")
        return 0
    torch.set_num_threads(1)   # the loaders' own workers do the work; the timing loop only iterates
    folder = image_folder(args.cache, 500 if args.quick else None)
    n_tv, s_tv = torchvision_pass(folder, args.workers, args.augment)
    n_ff, s_ff = ffcv_pass(folder, args.cache, args.workers, args.augment)
    tv, ff = n_tv / s_tv, n_ff / s_ff
    print(f"machine: {machine()}, load average {load_average():.1f}; {args.workers} "
          f"workers, batch {BATCH}, {SIZE} px random-resized crop + flip + normalise"
          + (f" + {AUTO_AUGMENT} + random erasing {RE_PROB}" if args.augment else ""))
    print(f"torchvision ImageFolder + DataLoader: {n_tv} images in {s_tv:.2f} s = {tv:.0f} images/s")
    print(f"FFCV Loader:                          {n_ff} images in {s_ff:.2f} s = {ff:.0f} images/s")
    print(f"ratio FFCV / torchvision: {ff / tv:.2f} -> " + ("meets" if ff / tv >= TARGET else "MISSES")
          + f" the target >= {TARGET:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

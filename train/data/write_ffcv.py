"""``python -m train.write_ffcv --src DIR --out FILE.beton --max-res N``: an ImageFolder split as an FFCV file.

FFCV (Leclerc et al., 2023) stores images pre-decoded or as JPEG in one memory-mapped file and decodes, crops and
flips them in compiled code, which is how ImageNet epochs keep a GPU busy. The writer reads ``DIR/<class>/<image>``
with torchvision's ImageFolder (classes sorted, as in training), resizes images whose longer side exceeds ``N``, and
writes ``FILE.beton`` atomically plus ``FILE.json`` holding the class names and every image's label (for
class-balanced subsets without reading the images back). Needs the ``ffcv`` extra (``pip install -e '.[ffcv]'``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dog_init.files import atomic_path

from ..config import ConfigError
from .image_folder import CheckedImageFolder, check_image_folder

__all__ = ["write_beton", "sidecar", "main"]


def sidecar(beton: Path) -> Path:
    return Path(beton).with_suffix(".json")


def write_beton(src: Path, out: Path, *, max_res: int, write_mode: str = "smart", jpeg_quality: int = 90,
                workers: int = 4) -> dict:
    """Write ``out`` (and its sidecar) from the ImageFolder ``src``; returns the sidecar's contents."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    folder = check_image_folder(str(src.parent), src.name)
    dataset = CheckedImageFolder(folder)
    fields = {"image": RGBImageField(write_mode=write_mode, max_resolution=max_res, jpeg_quality=jpeg_quality),
              "label": IntField()}
    with atomic_path(out, what="--out") as tmp:
        DatasetWriter(str(tmp), fields, num_workers=workers).from_indexed_dataset(dataset)
        meta = {"source": str(folder), "classes": dataset.classes, "labels": [int(t) for t in dataset.targets],
                "max_res": max_res, "write_mode": write_mode}
        with atomic_path(sidecar(out), what="--out sidecar") as tmp_meta:   # in place before the .beton is
            tmp_meta.write_text(json.dumps(meta))
    return meta


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.write_ffcv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, type=Path, help="an ImageFolder split: DIR/<class>/<image>")
    parser.add_argument("--out", required=True, type=Path, help="FILE.beton to write")
    parser.add_argument("--max-res", required=True, type=int, help="longest side kept, pixels (e.g. 256 for ImageNet)")
    parser.add_argument("--write-mode", default="smart", choices=("raw", "jpg", "smart", "proportion"),
                        help="raw pixels, JPEG, or JPEG only for large images (smart)")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    if args.out.suffix != ".beton":
        parser.error(f"--out must end in .beton, got {str(args.out)!r}")
    if args.max_res < 8:
        parser.error(f"--max-res must be >= 8 pixels, got {args.max_res}")
    try:
        import ffcv  # noqa: F401
    except ImportError as err:
        parser.error(f"ffcv is not installed ({err}); install the extra: pip install -e '.[ffcv]' (needs "
                     "pkg-config, libopencv-dev and libturbojpeg0-dev)")
    try:
        meta = write_beton(args.src, args.out, max_res=args.max_res, write_mode=args.write_mode,
                           jpeg_quality=args.jpeg_quality, workers=args.workers)
    except ConfigError as err:
        parser.error(str(err).replace("data.root", "--src parent"))
    except ValueError as err:   # --out cannot be written (atomic_path names it)
        parser.error(str(err))
    print(f"wrote {args.out} ({len(meta['labels'])} images, {len(meta['classes'])} classes) and {sidecar(args.out)}")
    return 0


"""Real data through the trainer: CIFAR-10 JPEGs from the shared data (the ``cifar_zip`` fixture) as an ImageFolder,
a corrupt JPEG, FFCV."""
import importlib.util
import zipfile

import numpy as np
import pytest

from train.data import SyntheticImages
from tests.helpers.runs import TINY, census, metrics, run_train

CLASSES = ("cat", "ship", "truck")


def _image_folder(root, cifar_zip, per_class=16, val_per_class=4):
    """A 3-class ImageFolder of real CIFAR-10 JPEGs read straight from the zip (train/ and val/)."""
    with zipfile.ZipFile(cifar_zip) as z:
        names = z.namelist()
        for split, source, n in (("train", "train", per_class), ("val", "test", val_per_class)):
            for cls in CLASSES:
                members = sorted(m for m in names if m.startswith(f"cifar10/{source}/{cls}/") and m.endswith(".jpg"))
                (root / split / cls).mkdir(parents=True)
                for m in members[:n]:
                    (root / split / cls / m.rsplit("/", 1)[1]).write_bytes(z.read(m))
    return root


IMAGEFOLDER = ["--data.name", "imagefolder", "--data.img_size", "32", "--epochs", "1"]


def test_imagefolder_run_on_cifar_jpegs(tmp_path, cifar_zip):
    root = _image_folder(tmp_path / "data", cifar_zip)
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--data.root", root, *IMAGEFOLDER)
    (row,) = metrics(out)
    assert row["eval_images"] == 12 and row["skipped_images"] == 0 and row["step"] == 3
    assert [c["epoch"] for c in census(out)] == [0, 1]


@pytest.mark.slow
def test_corrupt_jpeg_is_named_or_skipped(tmp_path, cifar_zip):
    root = _image_folder(tmp_path / "data", cifar_zip)
    bad = sorted((root / "train" / "ship").iterdir())[3]
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 3)
    done = run_train("--config", TINY, "--output-dir", tmp_path / "a", "--data.root", root, *IMAGEFOLDER,
                     check=False)
    assert done.returncode == 1
    assert str(bad) in done.stderr and "cannot decode this image" in done.stderr and "data.skip_bad" in done.stderr
    assert "Traceback" not in done.stderr
    out = tmp_path / "b"
    run_train("--config", TINY, "--output-dir", out, "--data.root", root, *IMAGEFOLDER, "--data.skip_bad", "true")
    assert metrics(out)[0]["skipped_images"] == 1


def test_missing_data_root_is_refused_before_writing(tmp_path):
    out = tmp_path / "run"
    done = run_train("--config", TINY, "--output-dir", out, "--data.name", "imagefolder", "--data.root",
                     tmp_path / "nowhere", check=False)
    assert done.returncode == 2 and "does not exist" in done.stderr and not out.exists()


def test_synthetic_images_depend_only_on_their_index():
    a, b = SyntheticImages(40, 4, 16, split="train"), SyntheticImages(40, 4, 16, split="train")
    assert np.array_equal(np.asarray(a.image(7)), np.asarray(b.image(7)))
    assert not np.array_equal(np.asarray(a.image(7)), np.asarray(SyntheticImages(40, 4, 16, split="val").image(7)))
    assert a.targets[:5] == [0, 1, 2, 3, 0]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ffcv") is None, reason="the ffcv extra is not installed")
def test_ffcv_write_and_train_round_trip(tmp_path, cifar_zip):
    root = _image_folder(tmp_path / "data", cifar_zip)
    betons = tmp_path / "betons"
    for split in ("train", "val"):
        run_train("--src", root / split, "--out", betons / f"{split}.beton", "--max-res", "32", "--workers", "1",
                  module="train.write_ffcv")
    assert (betons / "train.json").is_file()
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--data.name", "ffcv", "--data.root", betons,
              "--data.img_size", "32", "--epochs", "1")
    (row,) = metrics(out)
    assert row["eval_images"] == 12 and row["step"] == 3
    # The ImageNet recipes' augmentation on the FFCV path: RandAugment and random erasing on the device.
    aug = tmp_path / "augmented"
    run_train("--config", TINY, "--output-dir", aug, "--data.name", "ffcv", "--data.root", betons,
              "--data.img_size", "32", "--epochs", "1", "--augment.auto_augment", "rand-m9-mstd0.5-inc1",
              "--augment.re_prob", "0.25")
    (row,) = metrics(aug)
    assert row["step"] == 3 and row["train_loss"] > 0


def test_randaugment_posterize_at_full_magnitude_does_not_stop_a_run():
    """rand-m9-mstd0.5-inc1 (the ImageNet recipes) draws magnitude 10, where timm's posterize keeps 0 bits: a black
    image, not Pillow's ValueError."""
    from PIL import Image

    from train.config import load_recipe
    from train.data.common import build_transforms
    from tests.helpers import ROOT
    cfg = load_recipe(str(ROOT / "recipes" / "convmixer_768_32" / "dog.yaml"))
    cfg.data.img_size = 32
    train_tf, _ = build_transforms(cfg)
    (rand,) = [t for t in train_tf.transforms if type(t).__name__ == "RandAugment"]
    posterize = [op for op in rand.ops if op.name.startswith("Posterize")]
    assert posterize
    img = Image.fromarray(np.full((8, 8, 3), 200, np.uint8))
    assert np.asarray(posterize[0].aug_fn(img, 0)).max() == 0
    assert np.asarray(posterize[0].aug_fn(img, 4)).max() == 192

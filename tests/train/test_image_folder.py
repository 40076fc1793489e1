"""Image folders through the trainer: symlink loops, 16-bit PNGs, skipped images under mixup, SIGTERM to a process
group with DataLoader workers."""
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from train.config import ConfigError
from train.data import CheckedImageFolder, UnreadableImage, collate_refilling, collate_skipping, load_image
from tests.helpers.runs import TINY, kill_job, metrics, run_train, start_train


def _png(path, seed: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _image_folder(root, classes: int = 4, per_class: int = 12, val_per_class: int = 3):
    """``root/train/c<k>/<i>.png`` and ``root/val/...``: tiny random PNGs."""
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            for i in range(n):
                _png(root / split / f"c{c}" / f"{i:02d}.png", seed=1000 * (split == "val") + 100 * c + i)
    return root


IMAGEFOLDER = ["--data.name", "imagefolder", "--data.img_size", "16", "--epochs", "1"]


# ------------------------------------------------------------------------------------------ symlinks
def test_symlink_loop_is_refused_before_writing(tmp_path):
    root = _image_folder(tmp_path / "data")
    link = root / "train" / "c1" / "again"
    link.symlink_to(root / "train" / "c1", target_is_directory=True)
    with pytest.raises(ConfigError, match="again"):
        CheckedImageFolder(root / "train")
    out = tmp_path / "run"
    done = run_train("--config", TINY, "--output-dir", out, "--data.root", root, *IMAGEFOLDER, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(link) in done.stderr and str(root / "train" / "c1") in done.stderr and "loop" in done.stderr
    assert not out.exists()


def test_link_to_an_ancestor_folder_is_a_loop(tmp_path):
    root = _image_folder(tmp_path / "data")
    (root / "train" / "c0" / "sub").mkdir()
    (root / "train" / "c0" / "sub" / "up").symlink_to(root / "train", target_is_directory=True)
    with pytest.raises(ConfigError, match="up.*points at"):
        CheckedImageFolder(root / "train")


def test_folder_without_links_gives_torchvision_samples(tmp_path):
    root = _image_folder(tmp_path / "data", classes=3, per_class=4)
    _png(root / "train" / "c1" / "deeper" / "x.png", 1)
    _png(root / "train" / "c1" / "deeper" / "more" / "y.PNG", 2)
    (root / "train" / "c1" / "notes.txt").write_text("not an image")
    (root / "train" / "c2" / "b").mkdir()
    ours, theirs = CheckedImageFolder(root / "train"), ImageFolder(root / "train")
    assert ours.samples == theirs.samples and ours.classes == theirs.classes and ours.targets == theirs.targets


def test_directory_links_are_followed_once_and_file_links_count(tmp_path):
    root = _image_folder(tmp_path / "data", classes=2, per_class=3)
    outside = tmp_path / "extra"
    for i in range(2):
        _png(outside / f"e{i}.png", 10 + i)
    c0 = root / "train" / "c0"
    (c0 / "ext").symlink_to(outside, target_is_directory=True)          # followed: two more images
    (c0 / "ext_again").symlink_to(outside, target_is_directory=True)    # the same folder: not again
    (c0 / "self_file.png").symlink_to(c0 / "00.png")                     # a file link counts once
    ds = CheckedImageFolder(root / "train")
    paths = [p for p, t in ds.samples if t == 0]
    assert len(paths) == 3 + 2 + 1
    assert str(c0 / "ext" / "e0.png") in paths and not any("ext_again" in p for p in paths)


# ------------------------------------------------------------------------------------------ 16-bit images
def test_16_bit_png_ramp_loads_as_8_bit_ramp(tmp_path):
    ramp16 = (np.arange(64, dtype=np.uint32) * 65535 // 63).astype(np.uint16)[None].repeat(4, 0)
    Image.fromarray(ramp16).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    got = np.asarray(load_image(str(tmp_path / "ramp.png")))
    want = np.round(ramp16 / 257).astype(np.uint8)
    assert got.shape == (4, 64, 3) and got.dtype == np.uint8
    assert np.array_equal(got, np.repeat(want[..., None], 3, axis=2))
    assert got[0, 0, 0] == 0 and got[0, -1, 0] == 255 and len(np.unique(got)) > 50


def test_16_bit_big_endian_and_in_range_int32(tmp_path):
    ramp16 = (np.arange(32, dtype=np.uint32) * 2000).astype(np.uint16)[None].repeat(2, 0)
    Image.frombytes("I;16B", (32, 2), ramp16.astype(">u2").tobytes()).save(tmp_path / "big.tif")
    Image.fromarray(ramp16.astype(np.int32)).save(tmp_path / "int.tif")
    want = np.repeat(np.round(ramp16 / 257).astype(np.uint8)[..., None], 3, axis=2)
    for name, mode in (("big.tif", "I;16B"), ("int.tif", "I")):
        assert Image.open(tmp_path / name).mode == mode
        assert np.array_equal(np.asarray(load_image(str(tmp_path / name))), want), name


def test_float_and_out_of_range_images_are_refused_by_name(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tif")
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "wide.tif")
    for name, mode in (("float.tif", "F"), ("wide.tif", "I")):
        with pytest.raises(UnreadableImage, match=f"{name}.*mode '{mode}'"):
            load_image(str(tmp_path / name))


def test_8_bit_images_load_as_torchvision_does(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    images = {"rgb.png": Image.fromarray(rgb), "grey.png": Image.fromarray(rgb[..., 0]),
              "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "pal.png": Image.fromarray(rgb).quantize(16),
              "bw.png": Image.fromarray(rgb[..., 0] > 128), "photo.jpg": Image.fromarray(rgb)}
    for name, img in images.items():
        img.save(tmp_path / name)
        ours, theirs = load_image(str(tmp_path / name)), default_loader(str(tmp_path / name))
        assert ours.mode == theirs.mode == "RGB" and np.array_equal(np.asarray(ours), np.asarray(theirs)), name


def test_unsupported_mode_in_a_folder_is_skipped_or_named(tmp_path):
    root = _image_folder(tmp_path / "data", classes=2, per_class=2)
    bad = root / "train" / "c1" / "zz.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(bad)
    ds = CheckedImageFolder(root / "train")
    index = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(UnreadableImage, match=f"{bad}.*mode 'F'"):
        ds[index]
    assert CheckedImageFolder(root / "train", skip_bad=True)[index] is None


# ------------------------------------------------------------------------------------------ skipping + mixup
def test_refilling_collate_keeps_the_batch_full():
    items = [(torch.full((1,), float(i)), i) for i in range(4)]
    batch = [items[0], None, items[1], None, None, items[2]]
    x, y, skipped = collate_refilling(batch)
    assert len(x) == 6 and skipped.item() == 3
    assert y.tolist() == [0, 0, 1, 1, 2, 2]          # each hole takes the next readable item in turn
    x, y, skipped = collate_skipping(batch)
    assert y.tolist() == [0, 1, 2] and skipped.item() == 3
    with pytest.raises(UnreadableImage, match="every image"):
        collate_refilling([None, None])


def test_skip_bad_with_mixup_and_cutmix_trains(tmp_path):
    root = _image_folder(tmp_path / "data")
    bad = root / "train" / "c2" / "05.png"
    bad.unlink()
    (bad.parent / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage, not a JPEG" * 4)   # 48 images: 3 batches
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--data.root", root, *IMAGEFOLDER, "--data.skip_bad", "true",
              "--augment.mixup", "0.8", "--augment.cutmix", "1.0")
    rows = metrics(out)
    assert rows and sum(r["skipped_images"] for r in rows) >= 1 and rows[-1]["eval_images"] == 12


def test_odd_batch_with_mixup_is_refused_before_writing(tmp_path):
    out = tmp_path / "run"
    done = run_train("--config", TINY, "--output-dir", out, "--data.batch_size", "15", "--augment.mixup", "0.2",
                     check=False)
    assert done.returncode == 2 and "data.batch_size 15 must be even for mixup / cutmix" in done.stderr
    assert not out.exists()


# ------------------------------------------------------------------------------------------ SIGTERM
def test_unreadable_image_with_workers_exits_promptly(tmp_path):
    """The workers must still obey their parent's terminate() at exit, or the failed run would never end."""
    root = _image_folder(tmp_path / "data")
    (root / "train" / "c2" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage, not a JPEG" * 4)
    done = run_train("--config", TINY, "--output-dir", tmp_path / "run", "--data.root", root, *IMAGEFOLDER,
                     "--data.workers", "2", check=False, timeout=120)
    assert done.returncode == 1 and "bad.jpg" in done.stderr and "Traceback" not in done.stderr


def test_sigterm_to_the_process_group_stops_resumably(tmp_path):
    out = tmp_path / "run"
    with open(tmp_path / "stderr.txt", "w+") as err:
        proc = start_train("--config", TINY, "--data.workers", "2", "--epochs", "50", "--output-dir", out,
                           stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 120
            while not (out / "checkpoints" / "epoch_1").exists():
                assert proc.poll() is None, f"the run ended early ({proc.returncode})"
                assert time.monotonic() < deadline, "no epoch_1 checkpoint within 120 s"
                time.sleep(0.1)
            time.sleep(1.0)   # into epoch 2, where the workers are busy
            os.killpg(proc.pid, signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                kill_job(proc)
        err.seek(0)
        stderr = err.read()
    assert "killed by signal" not in stderr, stderr[-3000:]
    assert code == 143, stderr[-3000:]          # a preemption: a checkpoint at the current step, then exit 143
    assert "preempted: stopped by SIGTERM" in stderr, stderr[-3000:]   # at a step (or an epoch's end) checkpoint

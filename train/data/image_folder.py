"""Image folders for the trainer: torchvision's ImageFolder with a walk that refuses symlink loops, a loader that reads
16-bit greys correctly, and decoding errors that name the file (``train.data`` builds the loaders from them).

``class_files`` lists a class folder in torchvision's order but follows each linked directory once and refuses a
link to a folder that contains it (ConfigError, before training). ``load_image`` returns 8-bit RGB exactly as
torchvision's default loader does, except that 16-bit greys are scaled to 8 bit rather than clipped to white, and
float images are refused (UnreadableImage naming the file and the mode).
"""
from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from ..config import ConfigError
from .common import UnreadableImage

__all__ = ["UnreadableImage", "CheckedImageFolder", "check_image_folder", "class_files", "load_image"]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _refuse_loop(link: str, parent: str, folder: str) -> None:
    """ConfigError if the directory link ``link`` (found in ``parent``, under the class folder ``folder``) points at
    a folder that contains it: following it would list the same images again and again."""
    target = os.path.realpath(link)
    here = parent
    while True:   # the folders the link sits in, up to the class folder, and (by containment) those above it
        if _inside(os.path.realpath(here), target):
            shown = repr(os.readlink(link)) + ("" if os.readlink(link) == target else f" (= {target!r})")
            raise ConfigError(f"symlink loop in the image folder: {link!r} points at {shown}, which contains the "
                              "link, so its images would be listed again and again; remove or replace the link")
        if here == folder or os.path.dirname(here) == here:
            return
        here = os.path.dirname(here)


def class_files(folder: str) -> list[str]:
    """Every file under the class folder ``folder``, in torchvision's order (folders sorted by path, names sorted).

    Directory links are followed, each real directory at most once: the real tree is listed first, then the links
    in turn, and a link to a directory already listed is passed over, so no image counts twice (file links are
    plain files). A link to a folder that contains it is a loop: ConfigError naming the link and its target.
    Without directory links this lists exactly what torchvision's ``os.walk(followlinks=True)`` lists.
    """
    walked: set[str] = set()
    found: dict[str, list[str]] = {}
    tops = deque([folder])
    while tops:
        top = tops.popleft()
        if os.path.realpath(top) in walked:
            continue
        for root, dirs, files in os.walk(top):   # lists directory links in dirs but does not enter them
            walked.add(os.path.realpath(root))
            found[root] = files
            dirs.sort()                           # a fixed walk order: which of two links to one folder wins
            links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
            for name in links:
                _refuse_loop(os.path.join(root, name), root, folder)
                tops.append(os.path.join(root, name))
            # Under a link, a real subfolder may have been listed already (through another link to it).
            dirs[:] = [d for d in dirs if d not in links
                       and (top == folder or os.path.realpath(os.path.join(root, d)) not in walked)]
    return [os.path.join(root, name) for root in sorted(found) for name in sorted(found[root])]


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _grey16_to_rgb(path: str, img: Image.Image) -> Image.Image:
    """A 16-bit grey image (or a 32-bit one whose values fit in 16 bits) as 8-bit RGB: v / 257 rounded, replicated."""
    values = np.asarray(img)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise UnreadableImage(f"{path}: PIL mode {img.mode!r} with values {low}..{high}, beyond 16 bits, has no "
                              "defined 8-bit scale; convert it to 8 or 16 bits, remove it, or set data.skip_bad true")
    grey = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)   # round(v / 257): 65535 -> 255
    return Image.fromarray(grey).convert("RGB")


def load_image(path: str) -> Image.Image:
    """The image at ``path`` as 8-bit RGB. 16-bit greys (PIL modes I;16, I;16B, I;16L, and I when every value lies in
    0..65535) are scaled to 8 bit (v / 257, rounded) and replicated to RGB, because PIL's ``convert("RGB")`` clips
    them to white; float images (mode F) and wider I images raise UnreadableImage naming the file and the mode.
    Every other image goes through ``convert("RGB")`` exactly as torchvision's default loader does."""
    with open(path, "rb") as f:
        img = Image.open(f)
        if img.mode in _SIXTEEN_BIT or img.mode == "I":
            return _grey16_to_rgb(path, img)
        if img.mode == "F":
            raise UnreadableImage(f"{path}: PIL mode 'F' (floating-point pixels) has no defined 8-bit scale; "
                                  "convert it to 8 or 16 bits, remove it, or set data.skip_bad true")
        return img.convert("RGB")


class CheckedImageFolder(ImageFolder):
    """torchvision's ImageFolder whose images load with ``load_image``, whose walk is ``class_files`` (symlink loops
    refused) and whose decoding errors name the file, or are skipped (item ``None``)."""

    def __init__(self, root, transform=None, skip_bad: bool = False):
        super().__init__(root, transform=transform, loader=load_image)
        self.skip_bad = skip_bad

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """(path, class index) of the files of each class folder (``class_files``) that pass ``is_valid_file`` or
        have one of ``extensions``; ConfigError naming the classes without any."""
        valid = is_valid_file or (lambda path: has_file_allowed_extension(path, extensions))
        samples, empty = [], []
        for name in sorted(class_to_idx):
            folder = os.path.join(os.path.expanduser(directory), name)
            paths = [p for p in class_files(folder) if valid(p)] if os.path.isdir(folder) else []
            empty += [] if paths else [name]
            samples += [(p, class_to_idx[name]) for p in paths]
        if empty and not allow_empty:
            raise ConfigError(f"class folders without images in {str(directory)!r}: {', '.join(empty)}")
        return samples

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            sample = self.loader(path)
        except UnreadableImage:    # already names the file and the reason
            if self.skip_bad:
                return None
            raise
        except Exception as err:   # PIL raises UnidentifiedImageError, OSError (truncated), ValueError, ...
            if self.skip_bad:
                return None
            raise UnreadableImage(f"{path}: cannot decode this image ({type(err).__name__}: {err}); remove or "
                                  "replace it, or set data.skip_bad true to skip unreadable images") from None
        return (self.transform(sample) if self.transform else sample), target


def check_image_folder(root: str | None, split: str) -> Path:
    """The split folder ``root/split``, or ConfigError naming what is wrong with it."""
    if not root:
        raise ConfigError("data.root is not set; imagefolder data need a folder with train/ and val/ class folders")
    base = Path(root)
    if not base.is_dir():
        raise ConfigError(f"data.root {root!r} " + ("is not a folder" if base.exists() else "does not exist"))
    folder = base / split
    if not folder.is_dir():
        present = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise ConfigError(f"data.root {root!r} has no split folder {split!r}; it holds: "
                          f"{', '.join(present) or 'no folders'} (set data.train_split / data.val_split)")
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ConfigError(f"split folder {str(folder)!r} has no class folders (expected {folder}/<class>/<image>)")
    for c in classes:
        if not any(e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in os.scandir(c)):
            raise ConfigError(f"class folder {str(c)!r} holds no images ({' '.join(IMG_EXTENSIONS)})")
    return folder

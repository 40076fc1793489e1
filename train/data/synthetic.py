"""``SyntheticImages``: oriented gratings for the demo and the tests (``data.name: synthetic``)."""
from __future__ import annotations

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..config import ConfigError

__all__ = ["SyntheticImages"]


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

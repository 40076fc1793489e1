"""RandAugment, colour jitter and random erasing on whole batches on the device: the FFCV path's augmentation.

FFCV decodes and crops in compiled CPU pipelines, which have no RandAugment or random erasing. ``BatchAugment``
applies them after the batch reached the device (GPU, or the CPU), so the ImageNet recipes' full augmentation runs
at FFCV speed:

* RandAugment (``augment.auto_augment`` ``rand-nN-mM-mstdS``, timm's policy string): the batch is split into
  ``groups`` slices (default 16), each taking its own draw of torchvision's ``v2.RandAugment`` with N ops at
  magnitude M of 10 plus N(0, S) noise per slice (timm's ``mstd``), mapped onto torchvision's 31 bins. One draw per
  slice, not per image: a batch-wise approximation of per-image RandAugment that costs ``groups`` kernel launches
  per op instead of one per image. torchvision's op set differs slightly from timm's (no solarize-add, no
  ``inc1``-style increasing magnitudes).
* colour jitter (``augment.color_jitter``, only without RandAugment, as timm's ``create_transform``): per slice.
* random erasing (``augment.re_prob`` / ``re_mode``): timm's ``RandomErasing`` in its batch mode (per image, on the
  device, after normalisation), the way timm's own ``PrefetchLoader`` applies it.

Images arrive as uint8 NCHW and leave normalised float32 (``mean`` / ``std`` in 0..1 units).
"""
from __future__ import annotations

import re

import torch

__all__ = ["BatchAugment", "parse_rand_augment"]

_RAND = re.compile(r"^rand(?P<rest>(-[a-z]+[0-9.]+)*)$")


def parse_rand_augment(policy: str) -> dict:
    """{"n": ops, "m": magnitude 0..10, "mstd": its std} of a timm ``rand-...`` string (defaults n 2, m 9, mstd 0);
    ValueError for another policy or an unknown part."""
    match = _RAND.match(policy or "")
    if not match:
        raise ValueError(f"augment.auto_augment {policy!r}: the FFCV path takes RandAugment policies "
                         "'rand-nN-mM-mstdS' only")
    out = {"n": 2, "m": 9.0, "mstd": 0.0}
    for part in filter(None, match.group("rest").split("-")):
        key, value = re.match(r"([a-z]+)([0-9.]+)", part).groups()
        if key == "inc":
            continue   # torchvision's ops have no increasing-magnitude variant; the same ops at the same strength
        if key not in out:
            raise ValueError(f"augment.auto_augment {policy!r}: unknown part {part!r}; allowed: n, m, mstd, inc")
        out[key] = float(value)
    out["n"] = int(out["n"])
    return out


class BatchAugment:
    """Augment a uint8 batch (B, 3, H, W) on its device and normalise it (see the module docstring)."""

    def __init__(self, mean, std, *, auto_augment: str | None = None, color_jitter: float = 0.0,
                 re_prob: float = 0.0, re_mode: str = "pixel", groups: int = 16, generator: torch.Generator = None):
        self.policy = parse_rand_augment(auto_augment) if auto_augment else None
        self.color_jitter, self.groups, self.generator = float(color_jitter), int(groups), generator
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.erase = None
        if re_prob > 0:
            from timm.data.random_erasing import RandomErasing
            self.erase = RandomErasing(re_prob, mode=re_mode, device="cpu")

    def _slice_ops(self):
        from torchvision.transforms import v2
        if self.policy is not None:
            noise = float(torch.randn((), generator=self.generator)) * self.policy["mstd"]
            m = min(max(self.policy["m"] + noise, 0.0), 10.0)
            return v2.RandAugment(num_ops=self.policy["n"], magnitude=round(m * 3), num_magnitude_bins=31)
        if self.color_jitter > 0:
            j = self.color_jitter
            return v2.ColorJitter(brightness=j, contrast=j, saturation=j)
        return None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"BatchAugment takes uint8 batches (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if self.policy is not None or self.color_jitter > 0:
            parts = []
            for part in images.tensor_split(min(self.groups, len(images))):
                op = self._slice_ops()
                parts.append(op(part) if len(part) else part)
            images = torch.cat(parts)
        out = (images.float() - self.mean.to(images.device)) / self.std.to(images.device)
        if self.erase is not None:
            self.erase.device = out.device
            out = self.erase(out)   # batch mode: each image erased (or not) on its own
        return out   # elementwise ops keep the input's memory format (channels_last stays channels_last)

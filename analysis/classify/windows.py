"""Views of a large kernel at a bundled classifier's size: the size-free rule for 15x15 to 51x51 (issue 16).

Large trained kernels keep their DoG-like structure in a small central area (the paper's Appendix I, RepLKNet-XL's
27x27 kernels), but a kernel may also spread its pattern over the whole frame. So a k x k kernel (k above the
largest bundled size b, 13) is looked at through a ladder of centred windows of odd widths

    w_0 = b,  w_{j+1} = odd(1.5 w_j)  while 1.25 w_j < k,  and finally w = k (the whole kernel),

each cropped from the kernel's centre and, when wider than b, area-averaged down to b x b (``adaptive_avg_pool2d``:
every output pixel is the mean of the input pixels under it). A kernel is looked at through the narrowest window
holding ``WINDOW_SHARE`` (80 %) of its centred squared weights (``window_choice``; the whole kernel if none does),
and the b x b classifier names that view, clustered iff below the b x b threshold (0.3). Widths in pixels,
dissimilarity ``1 - cos`` of centred kernels as everywhere (Sec. 3.3). Picking the least dissimilar of all views
instead was measured and rejected: a downsampled view shrinks a central cross into a blob that matches better
(``benchmarks/kernel_sizes.py``).

Cropping and area pooling are symmetric about the centre, so every view of a rotated, reflected or negated kernel is
that transform of the view, and the energy shares are the same: the classifier's symmetry guarantee
(``analysis.core.symmetry``) carries over.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GROWTH", "WINDOW_SHARE", "window_sizes", "window_views", "window_choice"]

GROWTH = 1.5   # ratio of neighbouring window widths; the last one before k must be 1.25x smaller than k
WINDOW_SHARE = 0.8   # of the centred squared weights: 30 % pixel noise over a 51x51 frame still leaves > 0.9 inside


def window_sizes(size: int, base: int) -> list[int]:
    """The odd window widths a ``size`` x ``size`` kernel is viewed at for a ``base`` x ``base`` classifier."""
    if base % 2 == 0 or size % 2 == 0 or size < base:
        raise ValueError(f"windows need odd sizes with size >= base, got size {size}, base {base}")
    widths = [base]
    while widths[-1] * 1.25 < size:
        nxt = int(round(widths[-1] * GROWTH)) | 1
        if nxt * 1.25 >= size:
            break
        widths.append(nxt)
    return widths + [size] if widths[-1] != size else widths


def window_views(kernels: np.ndarray, base: int, widths: list[int]) -> np.ndarray:
    """(len(widths), N, base, base) float32: the centred ``w`` x ``w`` crop of every kernel, area-averaged to
    ``base`` x ``base`` where ``w > base``."""
    arr = torch.from_numpy(np.ascontiguousarray(kernels, dtype=np.float32))
    size = arr.shape[-1]
    views = []
    for w in widths:
        lo = (size - w) // 2
        crop = arr[:, lo:lo + w, lo:lo + w]
        if w > base:
            crop = F.adaptive_avg_pool2d(crop.unsqueeze(1), base).squeeze(1)
        views.append(crop)
    return torch.stack(views).numpy() if views else np.zeros((0, len(arr), base, base), np.float32)


def window_choice(kernels: np.ndarray, widths: list[int]) -> np.ndarray:
    """(N,) index into ``widths`` of the narrowest centred window holding ``WINDOW_SHARE`` of each (centred)
    kernel's squared weights; the last (the whole kernel) where none does."""
    energy = np.nan_to_num(np.asarray(kernels, dtype=np.float64) ** 2)
    size, total = energy.shape[-1], energy.sum(axis=(1, 2))
    pick = np.full(len(energy), len(widths) - 1, dtype=np.int64)
    for j in reversed(range(len(widths) - 1)):
        lo = (size - widths[j]) // 2
        inside = energy[:, lo:lo + widths[j], lo:lo + widths[j]].sum(axis=(1, 2))
        pick[inside >= WINDOW_SHARE * total] = j
    return pick

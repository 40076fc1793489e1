"""Kernel grids as PNG: red positive, blue negative, each kernel on its own symmetric colour scale."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from .files import atomic_path, check_output_file

__all__ = ["save_kernel_grid", "MAX_GRID_KERNELS"]

MAX_GRID_KERNELS = 400   # a 20 x 20 grid; beyond a few hundred cells a grid is unreadable and slow to draw


def save_kernel_grid(kernels, titles: Sequence[str] | None, path, *, ncols: int | None = None,
                     suptitle: str | None = None, cell: float = 1.25) -> Path:
    """Save kernels (n, k, k) as a grid PNG at ``path``, titled ``titles[i]`` (e.g. the family)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_output_file(path)   # before any drawing
    kernels = torch.as_tensor(kernels).detach().float().cpu()
    if kernels.ndim != 3:
        raise ValueError(f"kernels must have shape (n, k, k), got {tuple(kernels.shape)}")
    n = kernels.shape[0]
    if n == 0:
        raise ValueError("no kernels to draw")
    if n > MAX_GRID_KERNELS:
        raise ValueError(f"{n} kernels are too many for one grid (at most {MAX_GRID_KERNELS}); draw a sample")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} kernels")
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        limit = float(kernels[i].abs().max()) or 1.0
        ax.imshow(kernels[i].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[i]).replace("_", " "), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)

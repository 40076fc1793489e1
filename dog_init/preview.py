"""Kernel grids as PNG: red positive, blue negative, each kernel on its own symmetric colour scale."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["save_kernel_grid", "atomic_path"]


class atomic_path:
    """``with atomic_path(dest) as tmp: write(tmp)``: the file appears at ``dest`` only once complete."""

    def __init__(self, dest, suffix: str | None = None):
        self.dest = Path(dest)
        self.suffix = suffix if suffix is not None else self.dest.suffix

    def __enter__(self) -> Path:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.dest.name}.", suffix=self.suffix, dir=self.dest.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)   # mkstemp creates 0600; give the file the usual permissions
            os.replace(self.tmp, self.dest)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def save_kernel_grid(kernels, titles: Sequence[str] | None, path, *, ncols: int | None = None,
                     suptitle: str | None = None, cell: float = 1.25) -> Path:
    """Save kernels (n, k, k) as a grid PNG at ``path``, titled ``titles[i]`` (e.g. the family)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernels = torch.as_tensor(kernels).detach().float().cpu()
    if kernels.ndim != 3:
        raise ValueError(f"kernels must have shape (n, k, k), got {tuple(kernels.shape)}")
    n = kernels.shape[0]
    if n == 0:
        raise ValueError("no kernels to draw")
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

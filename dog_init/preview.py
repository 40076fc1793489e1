"""Kernel grids as PNG: red positive, blue negative, each kernel on its own symmetric colour scale."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["save_kernel_grid", "atomic_path", "check_output_file", "MAX_GRID_KERNELS"]

MAX_GRID_KERNELS = 400   # a 20 x 20 grid; beyond a few hundred cells a grid is unreadable and slow to draw


def check_output_file(path, what: str = "output") -> Path:
    """``path`` as a Path if a file can be written there, else ValueError naming ``what``, the path and the reason:
    it is a folder, a file stands where a folder is needed, or the nearest existing folder is not writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give a file path")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be written: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(path)!r} cannot be written: folder {str(folder)!r} is not writable")
    return path


class atomic_path:
    """``with atomic_path(dest) as tmp: write(tmp)``: the file appears at ``dest`` only once complete.

    On any failure, writing or moving into place, the temporary file and the folders this made for it are removed
    and the error propagates; ``dest`` is checked first (``check_output_file``), so a folder or unwritable place is a
    ValueError naming it before anything is created."""

    def __init__(self, dest, suffix: str | None = None, what: str = "output"):
        self.dest = Path(dest)
        self.suffix = suffix if suffix is not None else self.dest.suffix
        self.what = what

    def __enter__(self) -> Path:
        check_output_file(self.dest, self.what)
        self.created = []
        folder = self.dest.parent
        while not folder.exists():
            self.created.append(folder)    # deepest first
            folder = folder.parent
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.dest.name}.", suffix=self.suffix, dir=self.dest.parent)
        except BaseException as err:
            self._remove_created()
            if isinstance(err, OSError):   # e.g. a read-only or virtual file system: the path is the problem
                raise ValueError(f"{self.what} {str(self.dest)!r} cannot be written: {err.strerror or err}") from err
            raise
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self.tmp, 0o666 & ~umask)   # mkstemp creates 0600; give the file the usual permissions
                os.replace(self.tmp, self.dest)
                return False
            except BaseException as err:
                self._clean()
                if isinstance(err, OSError):   # e.g. a folder appeared at dest meanwhile
                    raise ValueError(f"{self.what} {str(self.dest)!r} cannot be written: {err.strerror or err}") \
                        from err
                raise
        self._clean()
        return False

    def _clean(self) -> None:
        self.tmp.unlink(missing_ok=True)
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:   # something else was put there meanwhile: keep it
                break


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

"""Kernel sources for the structured initialisers: a bank or a sample of k x k kernels (or a saved tap covariance)
given as an array or a ``.npy`` file, checked once, and resized between kernel sizes.

Resizing is linear interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``, the way an image is
resized): ``resize_matrix(k, L)`` is the (L^2, k^2) matrix ``R`` that maps a flattened k x k kernel to its L x L
resize. A covariance ``C`` of k x k kernels resizes to ``R C R^T``, which is exactly the covariance of the resized
kernels and exactly the bilinear / bicubic resize of ``C`` seen as a 4-D (k, k, k, k) tensor along both tap pairs:
resizing the kernels before taking their covariance and resizing the covariance are one and the same here.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch

__all__ = ["RESIZES", "load_kernels", "load_source", "resize_matrix", "resize_kernels", "resize_covariance"]

RESIZES = ("bilinear", "bicubic")


def check_resize(resize) -> str | None:
    """``resize`` as given: one of ``RESIZES`` or None (refuse a size mismatch)."""
    if resize is not None and resize not in RESIZES:
        raise ValueError(f"unknown resize {resize!r}; allowed: {', '.join(RESIZES)} or None (refuse other sizes)")
    return resize


def _as_array(source, what: str) -> np.ndarray:
    import numpy as np   # only for sources given as arrays / .npy files: dog_init needs torch alone
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(f"{what} file {path!r} does not exist; give a .npy file or an array")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"{what} file {path!r} is not a readable .npy array: {err}") from None
    elif isinstance(source, torch.Tensor):
        array = source.detach().cpu().double().numpy()
    elif isinstance(source, np.ndarray):
        array = source
    else:
        raise ValueError(f"{what} must be a numpy array, a torch tensor or a .npy path, got "
                         f"{type(source).__name__} {source!r:.60}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{what} must hold real numbers, got dtype {array.dtype}")
    array = np.asarray(array, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds {int((~np.isfinite(array)).sum())} non-finite values (NaN / inf)")
    return array


def load_kernels(source, what: str = "source", min_count: int = 1) -> tuple[torch.Tensor, list[int]]:
    """(kernels (N', k, k) float64, their row numbers in ``source``) from an array / tensor / ``.npy`` of shape
    (N, k, k) or (N, 1, k, k), k >= 2. All-zero kernels (pruned channels, as some trained models hold) carry no
    shape and are left out; at least ``min_count`` others must remain."""
    import numpy as np   # only for sources given as arrays / .npy files: dog_init needs torch alone
    array = _as_array(source, what)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1] != array.shape[2] or array.shape[1] < 2:
        raise ValueError(f"{what} must be kernels of shape (N, k, k) or (N, 1, k, k) with square k >= 2, got "
                         f"shape {tuple(array.shape)}")
    rows = np.flatnonzero(np.abs(array).reshape(len(array), -1).max(axis=1) > 0)
    if len(rows) < min_count:
        raise ValueError(f"{what} needs at least {min_count} kernels that are not all zero, got {len(rows)} of "
                         f"{len(array)}")
    return torch.from_numpy(array[rows].copy()), rows.tolist()


def load_source(source, what: str = "source") -> tuple[str, torch.Tensor]:
    """("kernels", (N, k, k)) or ("covariance", (k^2, k^2)) float64: a square 2-D array whose side is a square
    number is a tap covariance, anything else is read as kernels (``load_kernels``)."""
    import numpy as np   # only for sources given as arrays / .npy files: dog_init needs torch alone
    array = _as_array(source, what)
    if array.ndim == 2:
        n = array.shape[0]
        k = int(round(n ** 0.5))
        if array.shape[0] != array.shape[1] or k * k != n or k < 2:
            raise ValueError(f"{what}: a 2-D array must be a (k^2, k^2) tap covariance with k >= 2, got shape "
                             f"{tuple(array.shape)}")
        if not np.allclose(array, array.T, rtol=1e-5, atol=1e-8 * np.abs(array).max()):
            raise ValueError(f"{what}: the ({n}, {n}) covariance is not symmetric (max |C - C^T| = "
                             f"{np.abs(array - array.T).max():.3g})")
        eig = np.linalg.eigvalsh((array + array.T) / 2)
        if eig.max() <= 0 or eig.min() < -1e-6 * eig.max():
            raise ValueError(f"{what}: the ({n}, {n}) covariance is not positive semi-definite (eigenvalues from "
                             f"{eig.min():.3g} to {eig.max():.3g})")
        return "covariance", torch.from_numpy((array + array.T) / 2)
    return "kernels", load_kernels(array, what, min_count=2)[0]


@lru_cache(maxsize=64)
def _resize_matrix(k: int, size: int, mode: str) -> torch.Tensor:
    basis = torch.eye(k * k, dtype=torch.float64).reshape(k * k, 1, k, k)
    resized = torch.nn.functional.interpolate(basis, size=(size, size), mode=mode, align_corners=False)
    return resized.reshape(k * k, size * size).T.contiguous()


def resize_matrix(k: int, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(size^2, k^2) float64 matrix of the linear resize of a flattened k x k kernel to size x size."""
    check_resize(mode)
    return _resize_matrix(int(k), int(size), mode).clone()


def resize_kernels(kernels: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Kernels (N, k, k) resized to (N, size, size); unchanged when k == size."""
    k = kernels.shape[-1]
    if k == size:
        return kernels
    return (kernels.reshape(-1, k * k).to(torch.float64) @ resize_matrix(k, size, mode).T).reshape(-1, size, size)


def resize_covariance(cov: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """A (k^2, k^2) tap covariance resized to (size^2, size^2): ``R C R^T`` (see the module docstring)."""
    k = int(round(cov.shape[0] ** 0.5))
    if k == size:
        return cov
    r = resize_matrix(k, size, mode)
    out = r @ cov.to(torch.float64) @ r.T
    return (out + out.T) / 2

"""Kernel preprocessing of Sec. 3: centre, unit-normalise, and write in an orthonormal basis of the zero-sum plane.

A k x k kernel is a vector ``w`` in R^d, d = k^2. Centring ``w - mean(w) 1`` projects it onto the hyperplane
``H = {x : sum(x) = 0}``; dividing by the L2 norm puts it on the unit sphere of H. ``basis(k)`` is a d x (d - 1)
matrix ``B`` with orthonormal columns spanning H (the Helmert basis), so

    to_basis(w)   = B^T (w - mean(w)) / ||w - mean(w)||        in R^(d-1), unit norm
    from_basis(z) = B z                                         in R^d, zero-sum, reshaped to k x k

are inverse to each other on H (``from_basis(to_basis(w)) = centred, unit-norm w``), and cosine similarity of two
centred kernels equals the dot product of their basis coordinates. All-zero and non-finite kernels have no
direction: they map to the zero vector and are flagged by ``degenerate``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.linalg import helmert

__all__ = ["basis", "centre_normalise", "to_basis", "from_basis", "degenerate", "check_kernels", "check_dtype"]


def check_dtype(arr: np.ndarray, what: str = "kernels") -> np.ndarray:
    """``arr`` unchanged if it holds real numbers (integer or floating dtype), else ValueError naming the dtype: bool,
    complex, string and object arrays have no kernel values. The one rule for arrays, tensors and files."""
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{what} have dtype {arr.dtype}; need real numbers (an integer or floating dtype), not bool, "
                         "complex, strings or objects")
    return arr


def _as_array(kernels, what: str) -> np.ndarray:
    """A numpy array of ``kernels`` (ndarray, nested sequence or torch tensor), in a dtype that loses nothing."""
    if hasattr(kernels, "detach"):   # a torch tensor, without importing torch here
        if kernels.is_meta:
            raise ValueError(f"{what} are on the meta device and hold no values; materialise them first "
                             "(e.g. model.to_empty(device='cpu') and load the weights)")
        if kernels.is_complex() or not (kernels.is_floating_point() or str(kernels.dtype).startswith(
                ("torch.int", "torch.uint"))):
            raise ValueError(f"{what} have dtype {kernels.dtype}; need real numbers (an integer or floating dtype), "
                             "not bool or complex")
        kernels = kernels.detach().cpu()
        kernels = (kernels.double() if kernels.dtype.itemsize > 4 else kernels.float()).numpy()
    return check_dtype(np.asarray(kernels), what)


def check_kernels(kernels, *, what: str = "kernels", centre: bool = False) -> np.ndarray:
    """``kernels`` as a float32 array (N, k, k) with odd k >= 3, or ValueError naming the shape or dtype.

    centre: subtract each kernel's mean first, in float64 for inputs wider than float32, so that a constant offset
    (``w + c``) changes nothing downstream that only sees the centred kernel, even where ``c`` dwarfs ``w``.
    """
    arr = _as_array(kernels, what)
    if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and arr.shape[0] >= 3:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{what} must have shape (N, k, k), got {arr.shape}")
    n, kh, kw = arr.shape
    if kh != kw:
        raise ValueError(f"{what} must be square, got {kh}x{kw}")
    if kh < 3 or kh % 2 == 0:
        raise ValueError(f"{what} must have an odd size >= 3 (3, 5, 7, ...), got {kh}x{kw}")
    if centre and n:
        wide = arr.astype(np.float64 if arr.dtype.itemsize > 4 or arr.dtype.kind in "iu" else np.float32)
        with np.errstate(invalid="ignore"):   # inf - inf in a non-finite kernel: NaN, still non-finite
            arr = wide - wide.mean(axis=(1, 2), keepdims=True)
    return arr.astype(np.float32, copy=False)


@lru_cache(maxsize=None)
def basis(k: int) -> np.ndarray:
    """Orthonormal basis of the zero-sum hyperplane of k x k kernels: (k^2, k^2 - 1), float32, read-only."""
    b = helmert(k * k, full=False).T.astype(np.float32)   # rows of helmert() are orthonormal and sum to 0
    b.setflags(write=False)
    return b


def degenerate(kernels: np.ndarray) -> np.ndarray:
    """Bool (N,): kernels that hold a non-finite value or are exactly constant (all zero included): no shape to
    classify. Depends only on the centred kernel, so adding a constant offset never changes it (a kernel made
    constant by rounding, e.g. float32 ``w + 1`` with ``|w| < 1e-8``, has lost its shape to that rounding)."""
    flat = kernels.reshape(len(kernels), -1)
    finite = np.isfinite(flat).all(axis=1)
    const = np.ones(len(flat), dtype=bool)
    const[finite] = np.ptp(flat[finite], axis=1) == 0
    return ~finite | const


def centre_normalise(kernels) -> np.ndarray:
    """(N, k*k): each kernel minus its mean, divided by its L2 norm; degenerate kernels become zero vectors."""
    arr = check_kernels(kernels, centre=True)
    flat = arr.reshape(len(arr), -1).astype(np.float32, copy=True)
    bad = degenerate(arr)
    flat[bad] = 0.0
    flat -= flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    np.divide(flat, norms, out=flat, where=norms > 0)
    return flat


def to_basis(kernels) -> np.ndarray:
    """(N, k*k - 1) float32 coordinates of the centred, unit-norm kernels (zero rows for degenerate kernels)."""
    arr = check_kernels(kernels)
    return centre_normalise(arr) @ basis(arr.shape[-1])


def from_basis(coords, k: int) -> np.ndarray:
    """Inverse of ``to_basis`` on the zero-sum plane: (N, k*k - 1) -> (N, k, k)."""
    coords = np.asarray(coords, dtype=np.float32)
    if coords.ndim != 2 or coords.shape[1] != k * k - 1:
        raise ValueError(f"coords for k={k} must have shape (N, {k * k - 1}), got {coords.shape}")
    return (coords @ basis(k).T).reshape(-1, k, k)

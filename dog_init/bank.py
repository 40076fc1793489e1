"""``bank_init_``: every depthwise channel takes one filter of a given bank, optionally under a random symmetry.

With the 8 "master key" filters (``master-key-filters_k7.npy``) this is the setting of Babaiee, Kiasari, Rus &
Grosu: "The Master Key Filters Hypothesis: Deep Filters Are General" (AAAI 2025) and "The Quest for Universal
Master Key Filters in DS-CNNs" (arXiv 2509.11711), which distils these 8 from ConvNeXtV2 depthwise kernels, finds
trained filters to be mostly linear shifts ``a f + b`` of them, and trains networks initialised with them (frozen).
The filter data: github.com/tonylindeberg/masterfiltmodel ``model-fitting/8Filters.txt``, CC BY 4.0, by
Lindeberg, Babaiee and Kiasari. With every depthwise kernel of a trained model as the bank it initialises a
network from a trained model's kernels.
"""
from __future__ import annotations

from typing import Iterable, Union

import torch
from torch import nn

from .init import InitReport, Scale
from .sources import check_resize, load_kernels, resize_kernels
from .structured import structured_init_

__all__ = ["bank_init_", "SYMMETRIES", "dihedral"]

Patterns = Union[str, Iterable[str], None]
# The 8 symmetries of the square, by index: rotations by 0, 90, 180, 270 degrees, then the same after a left-right
# mirror of the result (``dihedral``).
SYMMETRIES = ("r0", "r90", "r180", "r270", "r0m", "r90m", "r180m", "r270m")


def dihedral(kernels: torch.Tensor, index: int) -> torch.Tensor:
    """``kernels`` (..., k, k) under symmetry ``SYMMETRIES[index]``: rotate by ``90 * (index % 4)`` degrees (counter-
    clockwise, ``torch.rot90``), then mirror left-right if ``index >= 4``."""
    out = torch.rot90(kernels, index % 4, dims=(-2, -1))
    return out.flip(-1) if index >= 4 else out


def bank_init_(model: nn.Module, source=None, *, symmetries: bool = True, normalise: bool = True,
               resize: str | None = "bilinear", scale: Scale = "default", include: Patterns = None,
               exclude: Patterns = None, seed: int | None = None) -> InitReport:
    """Give each depthwise channel one filter of the bank ``source``, at the layer's scale.

    ``w[c] = a * s_c * T_c(f_{i_c})``: the filter indices ``i_c`` take every bank filter equally often (counts differ
    by at most one; a bank larger than the layer gives it a random subset) in a seeded random order; with
    ``symmetries=True`` (default) ``T_c`` is one of the 8 rotations / reflections of the square (``SYMMETRIES``)
    and ``s_c`` a sign, both uniform and independent per channel (16
    variants of each filter: our choice, as a trained layer holds its filter shapes in many orientations, and
    ``a f + b`` with ``a < 0`` flips the sign); with ``symmetries=False`` each filter as given.

    source: required; a numpy array, torch tensor or ``.npy`` path of filters (M, k, k) or (M, 1, k, k), e.g. the
        8 master key filters (module docstring) or every depthwise kernel of a trained model. All-zero filters
        (pruned channels) are left out; the tags keep the source's row numbers.
    normalise: scale every bank filter to unit L2 norm first (default), so channels differ in shape, not size;
        False keeps the bank's relative norms.
    resize: a filter of size k on a layer of size L != k is resized bilinearly (default) or bicubically
        (``torch.nn.functional.interpolate``, ``align_corners=False``; ``dog_init.sources``) and then normalised;
        None refuses the size mismatch with a ValueError before anything is written.
    scale: ``"default"`` multiplies each layer by one factor ``a`` so its root-mean-square weight is
        ``default_std`` (PyTorch's default-init second moment), ``"match"`` its current std, ``"unit"`` / a float
        give every kernel that L2 norm. Summed branches, weight norm, include / exclude and seeds follow
        ``dog_init_``. Tags: ``"bank:<row>"``, the filter's row in ``source``.
    """
    if source is None:
        raise ValueError("bank_init_ needs source=: a .npy path, numpy array or torch tensor of filters (M, k, k), "
                         "e.g. ../shared/data/kernels/master-key-filters_k7.npy")
    for name, value in (("symmetries", symmetries), ("normalise", normalise)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    resize = check_resize(resize)
    bank, rows = load_kernels(source, "bank source")
    k = bank.shape[-1]
    tags = [f"bank:{row}" for row in rows]
    variants: dict[int, torch.Tensor] = {}

    def variants_for(size: int) -> torch.Tensor:
        """(8, M, size, size): every symmetry of every (resized, normalised) filter."""
        if size not in variants:
            if size != k and resize is None:
                raise ValueError(f"bank source has {k}x{k} filters but a chosen depthwise layer is {size}x{size} and "
                                 f"resize=None refuses other sizes; pass resize='bilinear' or 'bicubic', or exclude= "
                                 f"the {size}x{size} layers")
            filters = resize_kernels(bank, size, resize or "bilinear")
            if normalise:
                filters = filters / filters.flatten(1).norm(dim=1).clamp_min(1e-300).reshape(-1, 1, 1)
            variants[size] = torch.stack([dihedral(filters, i) for i in range(8)])
        return variants[size]

    def draw(u, n_units, size, channels, generator):
        pool = variants_for(size)
        m = len(rows)   # every filter channels // m times, a random channels % m of them once more
        extra = torch.randperm(m, generator=generator)[:channels % m]
        index = torch.cat([torch.arange(m).repeat(channels // m), extra])
        index = index[torch.randperm(channels, generator=generator)]
        if symmetries:
            symmetry = torch.randint(0, 8, (channels,), generator=generator)
            sign = torch.randint(0, 2, (channels,), generator=generator).to(torch.float64) * 2 - 1
        else:
            symmetry, sign = torch.zeros(channels, dtype=torch.long), torch.ones(channels, dtype=torch.float64)
        raw = pool[symmetry, index] * sign.reshape(-1, 1, 1)
        return raw, [tags[i] for i in index.tolist()]

    share = 1.0 / len(rows)
    return structured_init_(model, draw, {tag: share for tag in tags}, scale=scale, include=include,
                            exclude=exclude, seed=seed)

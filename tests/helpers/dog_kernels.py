"""Labelled kernels from ``dog_init``'s own ranges, corrupted the way trained kernels are, for classifier checks."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["noisy_dog_kernels"]


def noisy_dog_kernels(n: int, size: int, *, max_noise: float, seed: int = 99) -> tuple[torch.Tensor, np.ndarray]:
    """(kernels (n, size, size), coarse names (n,)): ``dog_init.sample`` of every family of ``families_for(size)``
    in equal shares, then ``gain * (kernel + U(0, max_noise) * pixel noise of unit norm) + 3``, gain log-normal."""
    from analysis.core.labels import families_for
    from dog_init import sample
    g = torch.Generator().manual_seed(seed)
    kernels, names = sample(n, size, {f: 1.0 for f in families_for(size)}, generator=g)
    noise = torch.randn(kernels.shape, generator=g)
    noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1)
    gain = torch.exp(torch.randn(len(kernels), 1, 1, generator=g))
    return gain * (kernels + max_noise * torch.rand(len(kernels), 1, 1, generator=g) * noise) + 3.0, np.array(names)

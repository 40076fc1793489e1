"""Small depthwise models and checks shared by the initialiser tests (tests/dog_init/)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dog_init import find_depthwise, get_init
from dog_init.bank import dihedral
from dog_init.covariance import gaussian_covariance
from dog_init.sources import resize_kernels
from dog_init.weight_access import effective_weight

PUBLISHED = ["covariance", "impulse", "box", "gaussian", "bank"]     # the initialisers published beside DoG
MODELS = ["convnext_atto", "mobilenetv2_050"]


class UserNet(nn.Module):
    """Every kind of conv dog_init_ has to tell apart, including a dilated depthwise conv with multiplier 2."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw_mult = nn.Conv2d(8, 16, 5, padding=4, dilation=2, groups=8)     # eligible: multiplier 2, dilation 2
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)              # grouped, not depthwise
        self.dw_1x1 = nn.Conv2d(16, 16, 1, groups=16)                         # 1x1 depthwise
        self.band = nn.Conv2d(16, 16, (1, 7), padding=(0, 3), groups=16)      # non-square
        self.even = nn.Conv2d(16, 16, 4, padding=1, groups=16)                # even kernel
        self.pw = nn.Conv2d(16, 32, 1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)      # eligible
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.bn(self.dw_mult(self.stem(x)))
        x = self.pw(self.even(self.band(self.dw_1x1(self.grouped(x)))))
        return self.head(self.dw(x).mean(dim=(2, 3)))


def assert_untouched(model, before, changed=()):
    """Every parameter and buffer not named in ``changed`` is bit-identical to ``before``'s."""
    old = dict(before.named_parameters()) | dict(before.named_buffers())
    new = dict(model.named_parameters()) | dict(model.named_buffers())
    assert old.keys() == new.keys()
    for key, value in new.items():
        if key not in changed:
            assert torch.equal(value, old[key]), f"{key} changed"


def single_dw_net(k: int = 5, c: int = 8) -> nn.Sequential:
    """A 1x1 conv and one k x k depthwise conv."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, c, 1), nn.Conv2d(c, c, k, padding=k // 2, groups=c))


def dw_net(k: int = 5, c: int = 8) -> nn.Sequential:
    """A 1x1 conv, a k x k and a 3x3 depthwise conv."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, c, 1), nn.Conv2d(c, c, k, padding=k // 2, groups=c),
                         nn.Conv2d(c, c, 3, padding=1, groups=c))


def synthetic_bank(k: int = 7, m: int = 5) -> np.ndarray:
    """m smooth, asymmetric k x k filters (no filter equals another under any symmetry)."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(m, k, k)).cumsum(axis=1).cumsum(axis=2).astype(np.float32)


def init_with(name: str, model: nn.Module, **kwargs):
    """get_init(name)(model, ...) with the source each needs."""
    if name == "bank" and "source" not in kwargs:
        kwargs["source"] = synthetic_bank()
    if name == "box" and "taps" not in kwargs:
        kwargs["taps"] = 3
    return get_init(name)(model, **kwargs)


def kernels(model) -> list[torch.Tensor]:
    """The applied kernels (C, k, k) of every eligible depthwise conv, float64."""
    return [effective_weight(conv).double().reshape(conv.out_channels, *conv.kernel_size)
            for _, conv in find_depthwise(model)[0]]


def neighbour_corr(w: torch.Tensor) -> float:
    """Correlation, over kernels, of horizontally and vertically neighbouring taps (pooled)."""
    a = torch.cat([w[:, :, :-1].flatten(), w[:, :-1, :].flatten()])
    b = torch.cat([w[:, :, 1:].flatten(), w[:, 1:, :].flatten()])
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def tap_corr(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64).reshape(len(w), -1)
    return np.corrcoef(w.T)


def rel_fro(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before, changed=()):
    now = model.state_dict()
    assert now.keys() == before.keys()
    for key, value in now.items():
        if key not in changed:
            assert torch.equal(value, before[key]), f"{key} changed"


def synthetic_kernels(n: int = 6000, k: int = 5) -> np.ndarray:
    """Kernels with a known, structured tap covariance (a random PSD matrix mixed with a smooth field)."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(k * k, 6))
    cov = a @ a.T + 4 * gaussian_covariance(k, 1.5).numpy()
    return (rng.multivariate_normal(np.zeros(k * k), cov, size=n) + rng.normal(size=(1, k * k))).reshape(n, k, k)


def as_variants(bank: np.ndarray, k: int) -> torch.Tensor:
    """(16 M, k * k) unit-norm: every filter (resized to k) under the 8 symmetries and both signs."""
    filters = resize_kernels(torch.from_numpy(np.asarray(bank, dtype=np.float64)), k)
    out = torch.cat([dihedral(filters, i) for i in range(8)]).flatten(1)
    out = out / out.norm(dim=1, keepdim=True)
    return torch.cat([out, -out])


def assert_bank_kernels(w: torch.Tensor, bank: np.ndarray, symmetries: bool = True):
    variants = as_variants(bank, w.shape[-1])
    if not symmetries:
        variants = variants[:len(bank)]
    unit = w.flatten(1) / w.flatten(1).norm(dim=1, keepdim=True)
    distance = torch.cdist(unit, variants).min(dim=1).values
    assert distance.max() < 1e-6

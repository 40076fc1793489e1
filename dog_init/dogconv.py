"""``DoGConv2d``: a depthwise convolution whose kernels stay DoG-family functions with learnable parameters.

The paper's conclusion (Babaiee et al., ICLR 2024, Sec. 7) asks whether depthwise kernels could be *constrained* to
the DoG families it finds rather than only started from them. Here each output channel ``c`` has a family fixed at
construction and a kernel rendered at every forward pass by ``dog_init.render``'s closed forms (the one definition
of the formulas, ``families.py``)::

    W_c = exp(g_c) * render(family_c, k, theta_c) [+ R_c]

``render`` gives a unit-L2-norm kernel, ``exp(g_c)`` is a positive learnable gain (positive, so an on-centre
channel cannot turn into an off-centre one) and ``R_c`` is the optional free k x k residual (``residual=True``,
initialised at zero) that lets a kernel leave its family where the data asks. Every continuous parameter is kept
in its trainable range ``[lo, hi]`` of ``BOUNDS`` by reparameterisation, ``value = lo + (hi - lo) sigmoid(z)``
with ``z`` the stored, unconstrained parameter (``families.<family>.z_<name>``); angles are free (stored in radians, rendered in degrees). Discrete
choices (``kind`` and ``sign`` of a second derivative, ``corner`` of a square) are buffers, fixed per channel.

Ranges (pixels unless said; ``PARAMS`` draws well inside them, which ``tests/dog_init/test_dogconv.py`` checks):

=========================================  ======================================================================
parameter                                  trainable range and why
=========================================  ======================================================================
sigma (centre, derivatives)                [0.5, 3.0]: sigma / e >= 0.2, so a derivative never falls between pixels
ratio                                      [1.2, 4.0]: the surround stays wider than the centre
surround                                   [0, 1.25]: < ratio^2 >= 1.44, so the centre value keeps its sign
elongation                                 [1, 2.5]: e >= 1 as ``families.py`` defines it; 2.5 is a line
dx, dy                                     [-1, 1]: the pattern stays within a pixel of the kernel centre
cross width / length / peak                [0.25, 1] / [1, 8] / [0, 1.5]: arms never shorter than wide
square half / offset / softness, dx, dy    [0.5, 2] / [0.25, 1.25] / [0.05, 0.5], [-0.5, 0.5]: the block stays
                                           off-centre and, even in a 3x3 kernel, on it (no vanishing kernel)
=========================================  ======================================================================

Anywhere in these ranges every family renders a finite kernel with a norm far from 0 at every size >= 3 (tested at
the corners of the box), so training cannot reach a kernel ``render`` refuses.

Since the parameters (and the gain) are 1-d tensors, optimiser factories that skip weight decay on 1-d tensors
(timm's) leave them alone; the residual is (C, 1, k, k) and is decayed like a conv weight.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .families import DOMAINS, FAMILIES, PARAMS, SPECS, as_int, check_size, render
from .mixes import Mix, assign, render_assignment

__all__ = ["DoGConv2d", "BOUNDS", "DISCRETE"]

_DOG = {"sigma": (0.5, 3.0), "ratio": (1.2, 4.0), "surround": (0.0, 1.25), "elongation": (1.0, 2.5),
        "theta": None, "dx": (-1.0, 1.0), "dy": (-1.0, 1.0)}
# Trainable range (lo, hi) of every continuous parameter of each ``PARAMS`` group; None marks a free angle.
BOUNDS: dict[str, dict[str, tuple[float, float] | None]] = {
    "centre": dict(_DOG), "first_derivative": dict(_DOG), "second_derivative": dict(_DOG),
    "cross": {"width": (0.25, 1.0), "length": (1.0, 8.0), "peak": (0.0, 1.5), "theta": None,
              "dx": (-1.0, 1.0), "dy": (-1.0, 1.0)},
    "square": {"half": (0.5, 2.0), "offset": (0.25, 1.25), "softness": (0.05, 0.5),
               "dx": (-0.5, 0.5), "dy": (-0.5, 0.5)},
}
DISCRETE = ("kind", "sign", "corner")   # fixed per channel: buffers, never trained
# sigmoid^-1 of a value exactly at a bound is infinite; values within EPS of a bound are stored just inside it.
_EPS = 1e-6


def _to_value(bounds, z: torch.Tensor) -> torch.Tensor:
    if bounds is None:
        return torch.rad2deg(z)
    lo, hi = bounds
    return lo + (hi - lo) * torch.sigmoid(z)


def _to_raw(bounds, value: torch.Tensor, name: str) -> torch.Tensor:
    if bounds is None:
        return torch.deg2rad(value)
    lo, hi = bounds
    t = (value - lo) / (hi - lo)
    if bool(((t < -_EPS) | (t > 1 + _EPS)).any()):
        bad = value[(t < -_EPS) | (t > 1 + _EPS)][:3].tolist()
        raise ValueError(f"{name} values {bad} lie outside DoGConv2d's trainable range [{lo}, {hi}]")
    return torch.logit(t.clamp(_EPS, 1 - _EPS))


class _FamilyParams(nn.Module):
    """The channels of one family: their indices in the layer, raw parameters and discrete choices."""

    def __init__(self, family: str, channels: Sequence[int], device=None, dtype=None):
        super().__init__()
        self.family, self.group = family, SPECS[family][0]
        n = len(channels)
        self.register_buffer("index", torch.tensor(list(channels), dtype=torch.long, device=device))
        for name in PARAMS[self.group]:
            if name in DISCRETE:
                self.register_buffer(name, torch.zeros(n, device=device, dtype=dtype))
            else:
                # "z_" because a square's "half" would shadow nn.Module.half
                self.register_parameter("z_" + name, nn.Parameter(torch.zeros(n, device=device, dtype=dtype)))

    def values(self) -> dict[str, torch.Tensor]:
        """The family's parameters in ``render``'s units (pixels, degrees), each (n,)."""
        bounds = BOUNDS[self.group]
        return {name: getattr(self, name) if name in DISCRETE else _to_value(bounds[name], getattr(self, "z_" + name))
                for name in PARAMS[self.group]}

    @torch.no_grad()
    def set_values_(self, values: Mapping[str, torch.Tensor]) -> None:
        bounds = BOUNDS[self.group]
        for name in PARAMS[self.group]:
            value = torch.as_tensor(values[name], dtype=torch.float64, device="cpu")
            if name in DISCRETE:   # device="cpu": also under `with torch.device("meta")`
                if not bool(torch.isin(value, torch.tensor(DOMAINS[name], dtype=value.dtype, device="cpu")).all()):
                    raise ValueError(f"{self.family} {name} must be one of {DOMAINS[name]}, "
                                     f"got {value.unique().tolist()}")
                getattr(self, name).copy_(value)
            else:
                getattr(self, "z_" + name).copy_(_to_raw(bounds[name], value, f"{self.family} {name}"))

    def extra_repr(self) -> str:
        return f"{self.family}, n={self.index.numel()}"


def _resolve_families(families, out_channels: int, generator: torch.Generator) -> list[str]:
    if families is None:
        families = "paper"
    if isinstance(families, str) and families in FAMILIES:
        return [families] * out_channels
    if isinstance(families, (str, Mapping)):
        return assign(out_channels, families, generator)      # ValueError for an unknown preset or family
    families = list(families)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown family {unknown[0]!r}; allowed: {', '.join(FAMILIES)}")
    if len(families) != out_channels:
        raise ValueError(f"families lists {len(families)} names for {out_channels} output channels")
    return families


def _pair(value, what: str) -> tuple[int, int]:
    try:
        pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair):
        raise ValueError(f"{what} must be an int >= 0 or a pair of them, got {value!r}")
    return pair


class DoGConv2d(nn.Module):
    """Depthwise conv, ``out_channels = multiplier * channels``, whose kernels are DoG-family functions.

    families: None (the ``"paper"`` mix), a mix preset or dict family -> weight (allocated exactly as
        ``dog_init_`` allocates a layer: ``mixes.assign``), one family name for every channel, or a list with one
        family per output channel.
    padding: as ``nn.Conv2d`` (int, pair, ``"same"``, ``"valid"``); None keeps the size at stride 1,
        ``dilation * (k - 1) // 2``.
    residual: add a free k x k kernel per channel, initialised at zero (``residual_norm()`` for logging).
    seed: the parameters are drawn from ``PARAMS`` by ``reset_parameters`` with a generator seeded here (None: a
        seed from torch's global RNG), so building on the meta device, ``to_empty`` and ``reset_parameters()``
        gives the same layer as building it directly.

    The gain starts at PyTorch's default conv-weight std, ``1 / sqrt(3 k^2)``, over the whole layer (as
    ``dog_init_``'s ``scale="default"``). In eval mode, under ``no_grad`` / ``inference_mode``, the rendered
    kernels are cached until ``train()`` or a parameter / buffer changes (in place or moved); a graph traced by
    ``torch.compile`` / ``torch.export`` renders at every call instead.
    """

    def __init__(self, channels: int, kernel_size: int, *, families: Mix | str | Sequence[str] | None = None,
                 multiplier: int = 1, stride=1, padding=None, dilation=1, bias: bool = True,
                 padding_mode: str = "zeros", residual: bool = False, seed: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        for what, value in (("channels", channels), ("multiplier", multiplier)):
            if as_int(value, what, "an integer >= 1") < 1:
                raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
        channels, multiplier = int(channels), int(multiplier)
        k = check_size(kernel_size)
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"unknown padding_mode {padding_mode!r}; allowed: zeros, reflect, replicate, circular")
        self.in_channels, self.out_channels, self.groups = channels, channels * multiplier, channels
        self.kernel_size, self.stride, self.dilation = (k, k), _pair(stride, "stride"), _pair(dilation, "dilation")
        if min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"stride and dilation must be >= 1, got {stride!r} and {dilation!r}")
        if padding is None:
            padding = tuple(d * (k - 1) // 2 for d in self.dilation)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"unknown padding {padding!r}; allowed: same, valid, an int or a pair")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1 (as in nn.Conv2d), got stride {stride!r}")
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding")
        self.padding_mode = padding_mode
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else as_int(seed, "seed", "an integer")
        self._families_arg = families
        with torch.device("cpu"):   # the draw is made on the CPU even under `with torch.device("meta")`
            self.channel_families: tuple[str, ...] = tuple(
                _resolve_families(families, self.out_channels, torch.Generator().manual_seed(self.seed)))
        self.families = nn.ModuleDict({
            family: _FamilyParams(family, [c for c, f in enumerate(self.channel_families) if f == family],
                                  device, dtype)
            for family in FAMILIES if family in self.channel_families})
        kw = dict(device=device, dtype=dtype)
        self.log_gain = nn.Parameter(torch.zeros(self.out_channels, **kw))
        self.residual = nn.Parameter(torch.zeros(self.out_channels, 1, k, k, **kw)) if residual else None
        self.bias = nn.Parameter(torch.zeros(self.out_channels, **kw)) if bias else None
        self._cache: tuple | None = None
        self.reset_parameters()

    # --- initialisation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw every family's parameters from ``PARAMS`` (seeded by ``self.seed``), the gain, bias and residual.

        The channel assignment and the draw are those of ``mixes.sample(out_channels, k, mix)`` with a generator
        seeded by ``self.seed``; the bias is drawn as ``nn.Conv2d`` draws it, U(-1/k, 1/k).
        """
        with torch.device("cpu"):
            generator = torch.Generator().manual_seed(self.seed)
            families = _resolve_families(self._families_arg, self.out_channels, generator)
            assert tuple(families) == self.channel_families, "assign is not deterministic under a seed"
            unit, drawn = render_assignment(families, self.kernel_size[0], generator, return_params=True)
            bound = 1.0 / self.kernel_size[0]
            bias = torch.rand(self.out_channels, generator=generator) * 2 * bound - bound
            std = float(unit.std())
            gain = torch.full((self.out_channels,), 1.0 / math.sqrt(3.0 * self.kernel_size[0] ** 2) / std
                              if std > 0 else 1.0)
            index = {family: torch.tensor([c for c, f in enumerate(families) if f == family])
                     for family in self.families}
        for family, module in self.families.items():
            module.index.copy_(index[family])
        self.set_family_params_({family: params for family, (_, params) in drawn.items()}, gain)
        if self.bias is not None:
            self.bias.copy_(bias)
        if self.residual is not None:
            self.residual.zero_()

    @torch.no_grad()
    def set_family_params_(self, params: Mapping[str, Mapping[str, torch.Tensor]], gain: torch.Tensor) -> None:
        """Set the kernels to ``gain[c] * render(family, k, params[family])`` (the channels of each family in
        increasing channel order, as ``render_assignment(..., return_params=True)`` returns them).

        Raises ValueError if a family is missing or a value lies outside ``BOUNDS``.
        """
        missing = [family for family in self.families if family not in params]
        if missing:
            raise ValueError(f"no parameters for famil{'y' if len(missing) == 1 else 'ies'} {missing}")
        for family, module in self.families.items():
            module.set_values_(params[family])
        gain = torch.as_tensor(gain, dtype=torch.float64, device="cpu")
        if gain.shape != (self.out_channels,) or not bool((gain > 0).all()):
            raise ValueError(f"gain must be {self.out_channels} positive values, got shape {tuple(gain.shape)}")
        self.log_gain.copy_(gain.log().to(self.log_gain.device))

    # --- rendering -----------------------------------------------------------------------------------------------
    def family_params(self) -> dict[str, dict[str, torch.Tensor]]:
        """{family: {parameter: (n,) values in render's units}}, differentiable."""
        return {family: module.values() for family, module in self.families.items()}

    def gain(self) -> torch.Tensor:
        """Per-channel L2 norm of the family part of each kernel, (out_channels,)."""
        return self.log_gain.exp()

    def render(self) -> torch.Tensor:
        """The kernels, (out_channels, 1, k, k), rendered now (no cache), differentiable in every parameter."""
        k = self.kernel_size[0]
        parts, order = [], []
        # Families that differ only in sign (on / off centre, cross, square) share one render call: on a CPU each
        # call's exp / sin / cos are MKL VML calls that wake the thread pool, the main cost of rendering.
        for members in self._render_groups():
            values = [self.families[f].values() for f in members]
            both = {name: torch.cat([v[name] for v in values]) for name in values[0]} if len(values) > 1 \
                else values[0]
            kernels = render(members[0], k, both)
            sizes = [self.families[f].index.numel() for f in members]
            for family, piece in zip(members, kernels.split(sizes)):
                parts.append(piece if SPECS[family][2] == SPECS[members[0]][2] else -piece)
                order.append(self.families[family].index)
        order = torch.cat(order)
        unit = torch.cat(parts)
        unit = torch.zeros_like(unit).index_copy(0, order, unit)   # channel order
        weight = (unit * self.log_gain.exp().view(-1, 1, 1)).unsqueeze(1)
        return weight if self.residual is None else weight + self.residual

    def _render_groups(self) -> list[list[str]]:
        """The layer's families grouped by closed form (``families.SPECS``: parameter group and formula)."""
        groups: dict = {}
        for family in self.families:
            groups.setdefault(SPECS[family][:2], []).append(family)
        return list(groups.values())

    def _cache_key(self) -> tuple:
        return tuple((t._version, t.data_ptr(), t.device, t.dtype)
                     for t in (*self.parameters(), *self.buffers()))

    @property
    def weight(self) -> torch.Tensor:
        """The kernels, (out_channels, 1, k, k): cached in eval mode when no gradient is asked of them."""
        if (self.training or torch.compiler.is_compiling()
                or (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))):
            return self.render()
        key = self._cache_key()
        if self._cache is None or self._cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():   # a normal tensor, usable outside inference mode
                self._cache = (key, self.render())
        return self._cache[1]

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if self.padding_mode != "zeros":
            x = F.pad(x, self._explicit_padding(), mode=self.padding_mode)
            return F.conv2d(x, weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _explicit_padding(self) -> list[int]:
        """(left, right, top, bottom) for F.pad, as nn.Conv2d computes it for a non-zero padding_mode."""
        if self.padding == "valid":
            return [0, 0, 0, 0]
        if self.padding == "same":
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return [total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2]
        return [self.padding[1], self.padding[1], self.padding[0], self.padding[0]]

    # --- logging and export --------------------------------------------------------------------------------------
    def residual_norm(self) -> float:
        """Frobenius norm of the residual kernels over the layer (0.0 without residual)."""
        return 0.0 if self.residual is None else float(self.residual.detach().norm())

    def family_counts(self) -> dict[str, int]:
        return {family: module.index.numel() for family, module in self.families.items()}

    @torch.no_grad()
    def to_conv2d(self) -> nn.Conv2d:
        """A plain depthwise ``nn.Conv2d`` of the same geometry holding the rendered kernels (and the bias)."""
        weight = self.render()
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups,
                         bias=self.bias is not None, padding_mode=self.padding_mode,
                         device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        conv.train(self.training)
        return conv

    def extra_repr(self) -> str:
        counts = ", ".join(f"{family}={n}" for family, n in self.family_counts().items())
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, dilation={self.dilation}")
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return text + f", bias={self.bias is not None}, residual={self.residual is not None}, families: {counts}"

"""``dog_init_``: put DoG-family kernels into every depthwise convolution of a model, in place.

A depthwise conv is an ``nn.Conv2d`` with ``groups == in_channels > 1`` (any channel multiplier
``out_channels = m * in_channels``, any dilation) and a square odd kernel of size >= 3. Everything else (patch
stems, pointwise and grouped convs, 1x1 depthwise convs of RepViT / MobileOne, the band kernels of InceptionNeXt,
even kernels) is left bit for bit as it was and listed in ``InitReport.skipped`` with the reason.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Union

import torch
from torch import nn

from .families import FAMILIES
from .mixes import Mix, assign, render_assignment, resolve_mix

__all__ = ["dog_init_", "InitReport", "LayerInit", "depthwise_reason", "find_depthwise", "default_std"]

Scale = Union[str, float]
_SHORT = {"on_centre": "on", "off_centre": "off", "on_cross": "on+", "off_cross": "off+",
          "first_derivative": "d1", "second_derivative": "d2", "on_square": "on#", "off_square": "off#"}
SCALES = ("default", "unit", "match")


@dataclass
class LayerInit:
    name: str                 # module name, as in model.named_modules()
    kernel_size: int
    families: list[str]       # one coarse family per output channel, in channel order

    def counts(self) -> dict[str, int]:
        counted = Counter(self.families)
        return {family: counted[family] for family in FAMILIES if counted[family]}


@dataclass
class InitReport:
    model: str
    mix: dict[str, float]
    scale: Scale
    seed: int
    layers: list[LayerInit] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (module name, reason)

    def counts(self) -> dict[str, int]:
        """Kernels per family over all initialised layers."""
        total = Counter()
        for layer in self.layers:
            total.update(layer.families)
        return {family: total[family] for family in FAMILIES if total[family]}

    def summary(self) -> str:
        """A plain-text table: one row per initialised layer, family counts in columns, then the skips."""
        families = [f for f in FAMILIES if f in self.counts()]
        short = {f: _SHORT[f] for f in families}
        width = max([len("layer")] + [len(layer.name) for layer in self.layers])
        head = f"{'layer':<{width}}  {'k':>2}  {'ch':>5}  " + "  ".join(f"{short[f]:>5}" for f in families)
        rows = [head, "-" * len(head)]
        for layer in self.layers:
            counts = layer.counts()
            rows.append(f"{layer.name:<{width}}  {layer.kernel_size:>2}  {len(layer.families):>5}  "
                        + "  ".join(f"{counts.get(f, 0):>5}" for f in families))
        total = self.counts()
        n = sum(total.values())
        rows.append(f"{'total':<{width}}  {'':>2}  {n:>5}  " + "  ".join(f"{total[f]:>5}" for f in families))
        rows.append(f"{'share':<{width}}  {'':>2}  {'':>5}  "
                    + "  ".join(f"{100 * total[f] / n:>4.1f}%" for f in families))
        rows.append("legend: " + ", ".join(f"{short[f]}={f}" for f in families))
        rows.append(f"{len(self.layers)} depthwise layers initialised ({self.model}, mix {self.mix}, "
                    f"scale {self.scale!r}, seed {self.seed}); {len(self.skipped)} convs skipped")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)


def depthwise_reason(module: nn.Module) -> str | None:
    """None if ``module`` is an eligible depthwise conv, else why it is not (for ``InitReport.skipped``)."""
    if not isinstance(module, nn.Conv2d):
        return "not an nn.Conv2d"
    groups, cin = module.groups, module.in_channels
    kh, kw = module.kernel_size
    if groups == 1:
        return f"not depthwise (groups=1, kernel {kh}x{kw})"
    if groups != cin:
        return f"grouped, not depthwise (groups={groups}, in_channels={cin})"
    if kh != kw:
        return f"non-square kernel {kh}x{kw}"
    if kh < 3:
        return f"{kh}x{kw} depthwise kernel (needs >= 3x3)"
    if kh % 2 == 0:
        return f"even kernel {kh}x{kw} (DoG families need an odd size)"
    return None


def find_depthwise(model: nn.Module) -> tuple[list[tuple[str, nn.Conv2d]], list[tuple[str, str]]]:
    """(eligible depthwise convs, other nn.Conv2d with the reason each was skipped), in module order."""
    eligible, skipped = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            reason = depthwise_reason(module)
            (skipped.append((name, reason)) if reason else eligible.append((name, module)))
    return eligible, skipped


def default_std(conv: nn.Conv2d) -> float:
    """Weight std of PyTorch's default Conv2d init: kaiming_uniform_(a=sqrt(5)) is U(-b, b) with
    b = 1 / sqrt(fan_in), so std = b / sqrt(3) = 1 / sqrt(3 fan_in), fan_in = (in_channels / groups) k^2."""
    fan_in = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
    return 1.0 / math.sqrt(3.0 * fan_in)


def _check_scale(scale) -> Scale:
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)} or a positive float")
        return scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (0 < scale < math.inf):
        raise ValueError(f"scale must be one of {', '.join(SCALES)} or a positive finite float, got {scale!r}")
    return float(scale)


def _compile(patterns, what: str) -> list[re.Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ValueError(f"invalid {what} regex {pattern!r}: {err}") from None
    return compiled


def _scaled(kernels: torch.Tensor, conv: nn.Conv2d, scale: Scale) -> torch.Tensor:
    """Unit-norm kernels (C, k, k) rescaled for ``conv`` as ``scale`` asks."""
    if scale == "unit":
        return kernels
    if isinstance(scale, float):
        return kernels * scale
    target = default_std(conv) if scale == "default" else conv.weight.detach().float().std().item()
    std = kernels.std()
    return kernels * (target / std) if std > 0 else kernels


@torch.no_grad()
def dog_init_(model: nn.Module, mix: Mix = "paper", *, scale: Scale = "default",
              include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None,
              seed: int | None = None) -> InitReport:
    """Replace, in place, the weight of every depthwise conv of ``model`` with DoG-family kernels.

    Within a layer the family counts follow ``mix`` exactly (largest-remainder rounding, ``mixes.allocate``) and
    are assigned to output channels in a seeded random order; each kernel's parameters are drawn from the ranges
    in ``families.PARAMS``.

    scale: ``"default"`` gives each layer the weight std of PyTorch's default init (``default_std``), so learning
        rate recipes keep working; ``"match"`` keeps the layer's current std (e.g. timm's trunc_normal init);
        ``"unit"`` makes each kernel unit L2 norm; a float sets each kernel's L2 norm.
    include / exclude: regexes searched in module names; a conv must match some ``include`` (if given) and no
        ``exclude``.
    seed: seeds a private ``torch.Generator``; None draws the seed from torch's global RNG (so
        ``torch.manual_seed`` still makes the run reproducible) and records it in the report.
    """
    mix = resolve_mix(mix)
    scale = _check_scale(scale)
    includes, excludes = _compile(include, "include"), _compile(exclude, "exclude")
    eligible, skipped = find_depthwise(model)
    if not eligible:
        raise ValueError(f"{type(model).__name__} has no depthwise nn.Conv2d (groups == in_channels > 1, square "
                         f"odd kernel >= 3) to initialise; convs found: {len(skipped)}")
    chosen = []
    for name, conv in eligible:
        if includes and not any(p.search(name) for p in includes):
            skipped.append((name, "not matched by include"))
        elif any(p.search(name) for p in excludes):
            skipped.append((name, "matched by exclude"))
        else:
            chosen.append((name, conv))
    if not chosen:
        raise ValueError(f"include={include!r} / exclude={exclude!r} leave none of the {len(eligible)} depthwise "
                         f"convs of {type(model).__name__}; e.g. {eligible[0][0]!r}")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    generator = torch.Generator().manual_seed(seed)
    report = InitReport(type(model).__name__, mix, scale, seed, skipped=skipped)
    for name, conv in chosen:
        report.layers.append(LayerInit(name, conv.kernel_size[0], assign(conv.out_channels, mix, generator)))

    # One render per kernel size over all layers: a few large vectorised calls instead of one per layer.
    for size in sorted({layer.kernel_size for layer in report.layers}):
        group = [(layer, conv) for layer, (_, conv) in zip(report.layers, chosen) if layer.kernel_size == size]
        kernels = render_assignment([f for layer, _ in group for f in layer.families], size, generator)
        start = 0
        for layer, conv in group:
            block = kernels[start:start + conv.out_channels]
            start += conv.out_channels
            conv.weight.copy_(_scaled(block, conv, scale).view_as(conv.weight))
    return report

"""``dog_init_``: put DoG-family kernels into every depthwise convolution of a model, in place.

A depthwise conv is an ``nn.Conv2d`` with ``groups == in_channels > 1`` (any channel multiplier
``out_channels = m * in_channels``, any dilation) and a square odd kernel of size >= 3. Everything else (patch
stems, pointwise and grouped convs, 1x1 depthwise convs of RepViT / MobileOne, the band kernels of InceptionNeXt,
even kernels) is left bit for bit as it was and listed in ``InitReport.skipped`` with the reason.
"""
from __future__ import annotations

import json
import math
import numbers
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Union

import torch
from torch import nn

from .branches import split_kernel, summed_groups
from .families import FAMILIES, as_int
from .mixes import Mix, assign, render_assignment, resolve_mix
from .profile import Profile
from .weight_access import check_writable, effective_weight, write_weight_

__all__ = ["dog_init_", "InitReport", "LayerInit", "depthwise_reason", "find_depthwise", "default_std",
           "DepthwisePlan", "plan_depthwise", "check_model", "check_scale", "compile_patterns"]

Scale = Union[str, float]
_SHORT = {"on_centre": "on", "off_centre": "off", "on_cross": "on+", "off_cross": "off+",
          "first_derivative": "d1", "second_derivative": "d2", "on_square": "on#", "off_square": "off#"}
SCALES = ("default", "unit", "match")


@dataclass
class LayerInit:
    name: str                 # module name, as in model.named_modules()
    kernel_size: int
    families: list[str]       # one coarse family per output channel, in channel order
    summed_with: list[str] = field(default_factory=list)   # branches summed with this one: same kernels, split

    def counts(self) -> dict[str, int]:
        return _ordered_counts(self.families)


@dataclass
class InitReport:
    model: str
    mix: dict[str, float]
    scale: Scale
    seed: int
    layers: list[LayerInit] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (module name, reason)
    profile: str | None = None   # source of the per-layer profile the mixes came from (mix=Profile)

    def counts(self) -> dict[str, int]:
        """Kernels per family (or per tag of another initialiser) over all initialised layers."""
        return _ordered_counts([family for layer in self.layers for family in layer.families])

    def summary(self) -> str:
        """A plain-text table: one row per initialised layer, family counts in columns, then the skips."""
        families = list(self.counts())
        short = {f: _SHORT.get(f, f) for f in families}   # tags of the other initialisers are shown as they are
        cell = {f: max(5, len(short[f])) for f in families}
        width = max([len("layer")] + [len(layer.name) for layer in self.layers])
        head = f"{'layer':<{width}}  {'k':>2}  {'ch':>5}  " + "  ".join(f"{short[f]:>{cell[f]}}" for f in families)
        rows = [head, "-" * len(head)]
        for layer in self.layers:
            counts = layer.counts()
            rows.append(f"{layer.name:<{width}}  {layer.kernel_size:>2}  {len(layer.families):>5}  "
                        + "  ".join(f"{counts.get(f, 0):>{cell[f]}}" for f in families))
        total = self.counts()
        n = sum(total.values())
        rows.append(f"{'total':<{width}}  {'':>2}  {n:>5}  " + "  ".join(f"{total[f]:>{cell[f]}}" for f in families))
        rows.append(f"{'share':<{width}}  {'':>2}  {'':>5}  "
                    + "  ".join(f"{100 * total[f] / n:>{cell[f] - 1}.1f}%" for f in families))
        rows.append("legend: " + ", ".join(f"{short[f]}={f}" for f in families))
        rows.append(f"{len(self.layers)} depthwise layers initialised ({self.model}, mix {self.mix}, "
                    f"scale {self.scale!r}, seed {self.seed}); {len(self.skipped)} convs skipped")
        groups = self.summed_groups()
        if groups:
            rows.append(f"{len(groups)} groups of summed branches, each applying one DoG kernel per channel "
                        f"between its members: " + "; ".join(" + ".join(g) for g in groups[:3])
                        + (" ..." if len(groups) > 3 else ""))
        return "\n".join(rows)

    def summed_groups(self) -> list[list[str]]:
        """Names of the depthwise branches a block sums, one list per block with more than one (see ``branches``)."""
        seen, groups = set(), []
        for layer in self.layers:
            if layer.summed_with and layer.name not in seen:
                group = [x.name for x in self.layers if x.name == layer.name or x.name in layer.summed_with]
                seen.update(group)
                groups.append(group)
        return groups

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)


def _ordered_counts(families: list[str]) -> dict[str, int]:
    """Counts per family: DoG families in ``FAMILIES`` order, then any other tag (e.g. ``"impulse"``,
    ``"bank:3"``) in natural order (``bank:2`` before ``bank:10``)."""
    counted = Counter(families)
    others = sorted((f for f in counted if f not in FAMILIES),
                    key=lambda f: [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", f)])
    return {family: counted[family] for family in [f for f in FAMILIES if counted[f]] + others}


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


def check_scale(scale) -> Scale:
    """``scale`` checked: a name of SCALES as is, or a positive finite number as a float; else ValueError."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)} or a positive float")
        return scale
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (0 < scale < math.inf):
        raise ValueError(f"scale must be one of {', '.join(SCALES)} or a positive finite float, got {scale!r}")
    return float(scale)


def compile_patterns(patterns, what: str) -> list[re.Pattern]:
    """``include`` / ``exclude``: None, one regex or a list of them, compiled; TypeError / ValueError name a bad one."""
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns) if isinstance(patterns, Iterable) else patterns
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{what} must be None, a regex string or a list of them, got {patterns!r}")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ValueError(f"invalid {what} regex {pattern!r}: {err}") from None
    return compiled


def _check_seed(seed) -> int | None:
    if seed is None:
        return None
    seed = as_int(seed, "seed", "None or an integer in [0, 2**64)")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be None or an integer in [0, 2**64), got {seed!r}")
    return seed


def _target_std(units, scale: Scale) -> list[float | None]:
    """Per unit, the std its effective kernel gets (None for "unit" / a norm), checked before anything is written."""
    if not isinstance(scale, str) or scale == "unit":
        return [None] * len(units)
    if scale == "default":
        return [default_std(max(convs, key=lambda c: c.kernel_size[0])) for _, convs in units]
    targets, bad = [], []
    for names, convs in units:
        std = _effective_block(convs).float().std().item()
        if not (math.isfinite(std) and std > 0):
            bad.append(f"{' + '.join(map(repr, names))} (std {std})")
        targets.append(std)
    if bad:
        raise ValueError(f"scale='match' needs a finite, non-zero weight std to keep, but the weights of "
                         f"{len(bad)} layer(s) have none: {'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; use "
                         f"scale='default' (PyTorch's default-init std) or a float")
    return targets


def _effective_block(convs: list[nn.Conv2d]) -> torch.Tensor:
    """The kernel (out_channels, L, L) that summed branches apply together: their weights, centred and added."""
    big = max(c.kernel_size[0] for c in convs)
    total = 0
    for conv in convs:
        pad = (big - conv.kernel_size[0]) // 2
        total = total + nn.functional.pad(effective_weight(conv).reshape(conv.out_channels, *conv.kernel_size),
                                          (pad, pad, pad, pad))
    return total


def _scaled(kernels: torch.Tensor, target_std: float | None, scale: Scale) -> torch.Tensor:
    """Unit-norm kernels (C, k, k) rescaled as ``scale`` asks (``target_std`` from ``_target_std``)."""
    if scale == "unit":
        return kernels
    if isinstance(scale, float):
        return kernels * scale
    std = kernels.std()
    return kernels * (target_std / std) if std > 0 else kernels


def check_model(model) -> None:
    """TypeError unless ``model`` is an ``nn.Module`` (a model name gets a hint to build it first)."""
    if not isinstance(model, nn.Module):
        hint = " (build it first, e.g. timm.create_model(name))" if isinstance(model, str) else ""
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__} {model!r:.60}{hint}")


@dataclass
class DepthwisePlan:
    """What every initialiser of this package shares, checked before any weight changes (``plan_depthwise``).

    ``units`` are the chosen depthwise convs in module order, each alone or with the summed branches it shares one
    kernel per channel with: ``(names, convs)``; ``targets[u]`` is the std that ``scale`` asks of unit ``u``'s
    effective kernel (None for ``"unit"`` / a float); ``generator`` is seeded with ``seed``. An initialiser draws
    one block of kernels ``(out_channels, L, L)`` per unit (``L = sizes()[u]``) and hands it to ``write_``."""
    model: str
    chosen: list[tuple[str, nn.Conv2d]]
    skipped: list[tuple[str, str]]
    units: list[tuple[list[str], list[nn.Conv2d]]]
    targets: list[float | None]
    scale: Scale
    seed: int
    generator: torch.Generator

    def sizes(self) -> list[int]:
        """Per unit, the size of the kernel its convs apply together (the largest of them)."""
        return [max(c.kernel_size[0] for c in convs) for _, convs in self.units]

    def layers(self, unit_families: list[list[str]]) -> list[LayerInit]:
        """``LayerInit`` per chosen conv, in module order, from one tag per channel per unit."""
        layer_of = {}
        for (names, convs), families in zip(self.units, unit_families):
            for name, conv in zip(names, convs):
                layer_of[name] = LayerInit(name, conv.kernel_size[0], families, [n for n in names if n != name])
        return [layer_of[name] for name, _ in self.chosen]

    def write_(self, u: int, block: torch.Tensor) -> None:
        """Make unit ``u`` apply ``block`` (out_channels, L, L): split between summed branches, written through
        weight reparameterisations (``weight_access.write_weight_``)."""
        names, convs = self.units[u]
        parts = split_kernel(block, [c.kernel_size[0] for c in convs]) if len(convs) > 1 else [block]
        for name, conv, part in zip(names, convs, parts):
            write_weight_(name, conv, part.reshape(conv.out_channels, 1, *conv.kernel_size))


def plan_depthwise(model: nn.Module, *, scale: Scale = "default", include=None, exclude=None,
                   seed: int | None = None) -> DepthwisePlan:
    """Check ``scale`` / ``include`` / ``exclude`` / ``seed`` and every chosen layer, group summed branches, compute
    the scale targets and seed the generator; nothing is written (``dog_init_``'s docstring has the rules)."""
    check_model(model)
    scale = check_scale(scale)
    seed = _check_seed(seed)
    includes, excludes = compile_patterns(include, "include"), compile_patterns(exclude, "exclude")
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
    for name, conv in chosen:
        check_writable(name, conv)
    units = [([chosen[i][0] for i in group], [chosen[i][1] for i in group]) for group in summed_groups(model, chosen)]
    targets = _target_std(units, scale)

    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    generator = torch.Generator().manual_seed(seed)
    return DepthwisePlan(type(model).__name__, chosen, skipped, units, targets, scale, seed, generator)


@torch.no_grad()
def dog_init_(model: nn.Module, mix: Mix = "paper", *, scale: Scale = "default",
              include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None,
              seed: int | None = None) -> InitReport:
    """Replace, in place, the weight of every depthwise conv of ``model`` with DoG-family kernels.

    mix: a preset name, a dict family -> weight, or a ``Profile`` (``load_profile``): per-layer mixes measured on
        a trained model, matched by relative depth and kernel size (``dog_init.profile``).

    Within a layer the family counts follow ``mix`` exactly (largest-remainder rounding, ``mixes.allocate``) and
    are assigned to output channels in a seeded random order; each kernel's parameters are drawn from the ranges
    in ``families.PARAMS``. Depthwise branches whose outputs a block sums (MobileOne, RepVGG, FastViT; see
    ``branches``) are one unit: they get the same families and parameters per channel, and together apply the DoG
    kernel (each pixel split equally between the branches covering it); ``LayerInit.summed_with`` lists them.
    Weights behind ``weight_norm`` (either API) are set through it, so the conv applies the DoG kernel.

    scale: ``"default"`` gives each layer the weight std of PyTorch's default init (``default_std``), so learning
        rate recipes keep working; ``"match"`` keeps the layer's current std (e.g. timm's trunc_normal init);
        ``"unit"`` makes each kernel unit L2 norm; a float sets each kernel's L2 norm. For summed branches these
        apply to the kernel they apply together.
    include / exclude: regexes searched in module names; a conv must match some ``include`` (if given) and no
        ``exclude``.
    seed: seeds a private ``torch.Generator``; None draws the seed from torch's global RNG (so
        ``torch.manual_seed`` still makes the run reproducible) and records it in the report.

    Every argument, and every chosen layer (weight with storage, settable through its reparameterisation, a
    finite non-zero std for ``"match"``), is checked before any weight changes: ValueError / TypeError name the
    bad value and what is allowed.
    """
    check_model(model)
    profile = mix if isinstance(mix, Profile) else None
    mix = profile.overall if profile is not None else resolve_mix(mix)
    plan = plan_depthwise(model, scale=scale, include=include, exclude=exclude, seed=seed)
    units, generator = plan.units, plan.generator
    report = InitReport(plan.model, mix, plan.scale, plan.seed, skipped=plan.skipped,
                        profile=profile.source if profile is not None else None)
    unit_size = plan.sizes()
    unit_mix = [mix if profile is None else profile.mix_for(u, len(units), unit_size[u]) for u in range(len(units))]
    unit_families = [assign(convs[0].out_channels, m, generator) for (_, convs), m in zip(units, unit_mix)]
    report.layers = plan.layers(unit_families)

    # One render per kernel size over all units: a few large vectorised calls instead of one per layer.
    for size in sorted(set(unit_size)):
        at = [u for u, s in enumerate(unit_size) if s == size]
        kernels = render_assignment([f for u in at for f in unit_families[u]], size, generator)
        start = 0
        for u in at:
            n = units[u][1][0].out_channels
            plan.write_(u, _scaled(kernels[start:start + n], plan.targets[u], plan.scale))
            start += n
    return report

"""``convert_`` / ``bake_``: swap a model's depthwise convs for ``DoGConv2d`` and back.

``convert_`` starts every ``DoGConv2d`` from exactly the kernels ``dog_init_`` would have given the model under the
same seed (it runs ``dog_init_`` and replays its draw to recover the parameters behind each kernel, then checks the
rendered kernels against the ones written). ``bake_`` renders each ``DoGConv2d`` once into a plain ``nn.Conv2d``
with the same geometry and the parameter names ``weight`` / ``bias``, so the state_dict loads into the original
architecture and the model exports (``torch.export``, ONNX) like any CNN.
"""
from __future__ import annotations

import bisect
import math
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from .init import InitReport, compile_patterns, default_std, depthwise_reason, dog_init_, find_depthwise
from .mixes import Mix, render_assignment
from .dogconv import DoGConv2d

__all__ = ["convert_", "bake_", "convert_reason", "depthwise_stats"]


def convert_reason(module: nn.Module) -> str | None:
    """None if ``convert_`` can swap ``module`` for a ``DoGConv2d``, else why not.

    Beyond ``depthwise_reason``: the conv must compute exactly ``nn.Conv2d``'s forward from ``weight`` and ``bias``
    alone (not timm's ``Conv2dSame``, a weight-normed or parametrised conv, a conv with hooks), since the swap
    keeps only the geometry and ``bake_`` gives back a plain ``nn.Conv2d``.
    """
    reason = depthwise_reason(module)
    if reason:
        return reason
    cls = type(module)
    if parametrize.is_parametrized(module):
        return "parametrised weight (convert_ swaps plain nn.Conv2d only)"
    if cls.forward is not nn.Conv2d.forward or cls._conv_forward is not nn.Conv2d._conv_forward:
        return f"{cls.__name__} overrides nn.Conv2d's forward (convert_ swaps plain nn.Conv2d only)"
    extra = sorted(set(dict(module.named_parameters(recurse=False))) - {"weight", "bias"})
    if extra or module._forward_pre_hooks or module._forward_hooks:
        return f"parameters {extra} or forward hooks, e.g. weight_norm (convert_ swaps plain nn.Conv2d only)"
    return None


def _check_include(model: nn.Module, include) -> None:
    """ValueError unless every include pattern selects at least one convertible conv."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for pattern in compile_patterns(include, "include"):
        hits = [(name, convert_reason(m)) for name, m in convs if pattern.search(name)]
        if not any(reason is None for _, reason in hits):
            found = "; ".join(f"{name!r}: {reason}" for name, reason in hits[:5]) or "no nn.Conv2d"
            raise ValueError(f"include {pattern.pattern!r} selects no depthwise conv convert_ can swap in "
                             f"{type(model).__name__}; it matches {found}")


def _replay(report: InitReport) -> dict[str, tuple[torch.Tensor, dict]]:
    """{layer name: (unit kernels, {family: params})} for the layers ``dog_init_`` gave a kernel of their own.

    Replays ``dog_init_``'s draw from ``report.seed``: one ``assign`` (one randperm) per unit of summed branches,
    units ordered by their first member, then one ``render_assignment`` per unit kernel size in increasing order.
    ``convert_`` checks the result against the weights ``dog_init_`` wrote, so a change there cannot go unnoticed.
    """
    units, seen = [], set()
    for layer in report.layers:
        if layer.name not in seen:
            members = [x for x in report.layers if x.name == layer.name or x.name in layer.summed_with]
            seen.update(x.name for x in members)
            units.append(members)
    generator = torch.Generator().manual_seed(report.seed)
    for members in units:
        torch.randperm(len(members[0].families), generator=generator)
    sizes = [max(x.kernel_size for x in members) for members in units]
    out = {}
    for size in sorted(set(sizes)):
        at = [units[u] for u, s in enumerate(sizes) if s == size]
        kernels, drawn = render_assignment([f for members in at for f in members[0].families], size, generator,
                                           return_params=True)
        start = 0
        for members in at:
            stop = start + len(members[0].families)
            params = {}
            for family, (index, values) in drawn.items():   # index is increasing: this unit's run is a slice
                lo, hi = bisect.bisect_left(index, start), bisect.bisect_left(index, stop)
                if hi > lo:
                    params[family] = {name: value[lo:hi] for name, value in values.items()}
            if len(members) == 1:
                out[members[0].name] = (kernels[start:stop], params)
            start = stop
    return out


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@torch.no_grad()
def convert_(model: nn.Module, mix: Mix = "paper", *, include: str | Iterable[str] | None = None,
             exclude: str | Iterable[str] | None = None, residual: bool = False,
             seed: int | None = None) -> InitReport:
    """Swap every eligible depthwise ``nn.Conv2d`` of ``model`` for a ``DoGConv2d``, in place.

    ``mix`` is anything ``dog_init_`` takes (a preset, a dict family -> weight, a per-layer ``Profile``).
    Eligible as for ``dog_init_`` (``find_depthwise``, ``include`` / ``exclude`` regexes on module names); each
    ``DoGConv2d`` keeps the conv's geometry (channels, multiplier, stride, padding, dilation, padding_mode), bias,
    device, dtype and train/eval mode, and starts from the kernels ``dog_init_(model, mix, seed=seed,
    include=include, exclude=exclude)`` gives (families, parameters and the ``scale="default"`` std), so
    ``convert_`` and ``dog_init_`` runs with the same seed start from the same network. ``residual`` adds the free
    k x k kernel per channel, from zero.

    Raises ValueError for an unknown mix, a bad regex, an include pattern that selects no convertible depthwise
    conv (naming the convs it matches and why they are not), or a model without one. A selected conv that is
    depthwise but not a plain ``nn.Conv2d`` (``convert_reason``) keeps its ``dog_init_`` kernels and is listed in
    ``report.skipped``, as are summed branches (MobileOne, RepVGG: each holds part of one split kernel). The
    weights must exist (build on the meta device, ``to_empty``, then ``convert_``). Returns ``dog_init_``'s report,
    whose ``layers`` are the converted layers.
    """
    if isinstance(model, nn.Conv2d):
        raise ValueError("convert_ swaps submodules; for a bare nn.Conv2d build DoGConv2d(...) directly "
                         "or wrap the conv in an nn.Sequential")
    _check_include(model, include)
    report = dog_init_(model, mix, scale="default", include=include, exclude=exclude, seed=seed)
    modules = dict(model.named_modules())
    drawn = _replay(report)
    converted = []
    for i, layer in enumerate(report.layers):
        conv = modules[layer.name]
        reason = convert_reason(conv) or (f"summed with {layer.summed_with}: holds part of a split DoG kernel"
                                          if layer.summed_with else None)
        if reason:
            report.skipped.append((layer.name, f"dog_init_ kernels, not converted: {reason}"))
            continue
        unit, params = drawn[layer.name]
        std = unit.std()
        gain = torch.full((conv.out_channels,), default_std(conv) / float(std) if std > 0 else 1.0)
        dog = DoGConv2d(conv.in_channels, conv.kernel_size[0], families=layer.families,
                        multiplier=conv.out_channels // conv.in_channels, stride=conv.stride,
                        padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                        padding_mode=conv.padding_mode, residual=residual, seed=(report.seed + i) % 2**62,
                        device=conv.weight.device, dtype=conv.weight.dtype)
        dog.set_family_params_(params, gain)
        if conv.bias is not None:
            dog.bias.copy_(conv.bias)
        err = (dog.render() - conv.weight).abs().max().item()
        # sigmoid / logit round trips cost ~1e-6 relative in float32; a bf16 model renders in bf16.
        tol = max(1e-4, 50 * torch.finfo(conv.weight.dtype).eps) * conv.weight.abs().max().item() + 1e-6
        if not err <= tol:
            raise RuntimeError(f"convert_ could not reproduce dog_init_'s kernels of {layer.name!r} (max error "
                               f"{err:.3g}); dog_init_'s draw order changed: update convert_'s _replay")
        for p in dog.parameters():
            p.requires_grad_(conv.weight.requires_grad)
        dog.train(conv.training)
        _swap(model, layer.name, dog)
        converted.append(layer)
    if not converted:
        raise ValueError(f"none of the {len(report.layers)} selected depthwise convs of {type(model).__name__} can be "
                         f"swapped (they now hold dog_init_ kernels): "
                         + "; ".join(f"{n!r}: {r}" for n, r in report.skipped[-3:]))
    report.layers = converted
    return report


@torch.no_grad()
def bake_(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``DoGConv2d`` of ``model`` with a plain depthwise ``nn.Conv2d`` holding its
    rendered kernels (``DoGConv2d.to_conv2d``); returns ``model``, so ``bake_(copy.deepcopy(model))`` gives a
    baked copy.

    The state_dict then has the original architecture's keys (``<name>.weight``, ``<name>.bias``), and the outputs
    equal the ``DoGConv2d`` model's within float rounding.
    """
    if isinstance(model, DoGConv2d):
        raise ValueError("bake_ swaps submodules; for a bare DoGConv2d use layer.to_conv2d()")
    for name in [name for name, m in model.named_modules() if isinstance(m, DoGConv2d)]:
        _swap(model, name, model.get_submodule(name).to_conv2d())
    return model


def depthwise_stats(model: nn.Module) -> dict:
    """Parameter counts of the depthwise layers and the residual norms, for logging.

    Returns ``{"plain_layers", "plain_params"`` (eligible plain depthwise ``nn.Conv2d``: weight + bias),
    ``"dogconv_layers", "dogconv_params"`` (every parameter of the ``DoGConv2d`` layers: family parameters, gain,
    residual, bias), ``"dogconv_as_plain_params"`` (what those layers hold once baked), ``"depthwise_params"``
    (plain + dogconv), ``"residual_norm"`` (root of the summed squares over layers) and ``"residual_norms"``
    ({module name: Frobenius norm}, layers with a residual only)``}``.
    """
    plain = [conv for _, conv in find_depthwise(model)[0]]
    dogs = [(name, m) for name, m in model.named_modules() if isinstance(m, DoGConv2d)]
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    norms = {name: m.residual_norm() for name, m in dogs if m.residual is not None}
    as_plain = sum(m.out_channels * (m.kernel_size[0] ** 2 + (m.bias is not None)) for _, m in dogs)
    stats = {"plain_layers": len(plain), "plain_params": sum(count(c) for c in plain),
             "dogconv_layers": len(dogs), "dogconv_params": sum(count(m) for _, m in dogs),
             "dogconv_as_plain_params": as_plain,
             "residual_norm": math.sqrt(sum(v * v for v in norms.values())), "residual_norms": norms}
    stats["depthwise_params"] = stats["plain_params"] + stats["dogconv_params"]
    return stats

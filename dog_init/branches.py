"""Parallel depthwise branches that a block sums (MobileOne, RepVGG, FastViT's large + small kernel), so that
``dog_init_`` can give them one DoG kernel between them.

A reparameterisable block trains k x k depthwise branches side by side, adds their outputs, and for inference folds
them into one conv whose kernel is the sum of the branch kernels (RepVGG, Ding et al. 2021; MobileOne, Vasu et al.
2023). Drawn independently, the branches would sum to no DoG at all. Eligible depthwise convs are *summed
branches* when

* each sits in a *bare branch*: a module whose subtree is that conv plus normalisation, identity and dropout layers
  and parameter-free containers only (a conv-BN pair: no activation, no second conv), that is a child of one block,
  directly or as an item of the block's ``nn.ModuleList``;
* they see the same input and give aligned outputs: same in/out channels, groups, stride, dilation, padding mode
  and centre offset ``padding - dilation (k - 1) / 2``;
* the block's forward, traced symbolically (``torch.fx``, the branches as leaves), feeds every branch the same input
  node and adds their outputs through additions only. A block that cannot be traced counts if it is
  reparameterisable by convention (it defines one of ``REPARAM_METHODS``: timm's MobileOneBlock, RepVggBlock,
  FastViT's ReparamLargeKernelConv, RepViT's RepVggDw, DingXiaoH's RepVGG blocks). The trace is what keeps
  look-alikes apart: EfficientViT's per-head ``dws`` and EdgeNeXt's ``convs`` are same-geometry lists too, but each
  conv sees a different input.

Sizes may differ (FastViT adds a 3x3 branch to a 7x7 one): the block's effective kernel then has the largest size
and a smaller branch adds to its central window. ``split_kernel`` divides each pixel of the effective kernel
equally between the branches whose window covers it, so the branches sum to exactly that kernel.
"""
from __future__ import annotations

import copy
import operator

import torch
import torch.fx
from torch import nn

__all__ = ["REPARAM_METHODS", "summed_groups", "split_kernel"]

REPARAM_METHODS = ("reparameterize", "reparameterise", "reparametrize", "switch_to_deploy", "fuse",
                   "get_equivalent_kernel_bias", "merge_kernel")
_PASSIVE = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.Identity, nn.Dropout)


def _bare(module: nn.Module) -> bool:
    """True if ``module``'s subtree is one Conv2d plus normalisation / identity / dropout layers and parameter-free
    containers (ConvNormAct, Sequential) only: no activation, no second conv."""
    if sum(isinstance(m, nn.Conv2d) for m in module.modules()) != 1:
        return False
    return all(isinstance(m, (nn.Conv2d, *_PASSIVE)) or (next(m.children(), None) is not None and not m._parameters)
               for m in module.modules())


def _geometry(conv: nn.Conv2d) -> tuple:
    """What two convs must share to see the same input and give aligned outputs."""
    k, dilation = conv.kernel_size[0], conv.dilation
    offset = conv.padding if isinstance(conv.padding, str) else \
        tuple(p - d * (k - 1) / 2 for p, d in zip(conv.padding, dilation))
    return conv.in_channels, conv.out_channels, conv.groups, conv.stride, dilation, conv.padding_mode, offset


def _block_of(name: str, modules: dict[str, nn.Module]) -> tuple[str, str] | None:
    """(block, branch) names for conv ``name``: the branch is the largest bare module holding the conv, the block the
    first ancestor of the branch that is not an ``nn.ModuleList``; None for a conv that is the whole model."""
    parts = name.split(".")
    if not name:
        return None
    root = len(parts)                        # the branch is ".".join(parts[:root]); grow it while it stays bare
    while root > 1 and _bare(modules[".".join(parts[:root - 1])]):
        root -= 1
    block = root - 1
    while block > 0 and isinstance(modules[".".join(parts[:block])], nn.ModuleList):
        block -= 1
    return ".".join(parts[:block]), ".".join(parts[:root])


class _BlockTracer(torch.fx.Tracer):
    """Traces only the block's own forward: every submodule is a leaf, so none of their code runs."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return True


_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}


def _summed(block: nn.Module, branches: list[str]) -> bool | None:
    """Whether ``block``'s forward feeds all ``branches`` (names relative to the block) the same input and adds
    their outputs (through additions only); None if the block cannot be traced symbolically."""
    try:   # on a copy: a forward may update buffers (a BN's batch counter) even when traced
        graph = _BlockTracer().trace(copy.deepcopy(block))
    except Exception:   # data-dependent control flow, unsupported ops: fx raises many different types
        return None
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target in branches]
    if {n.target for n in calls} != set(branches) or len(calls) != len(branches):
        return False   # a branch called twice or not at all is no plain parallel branch
    if len({(n.args, tuple(n.kwargs.items())) for n in calls}) != 1:
        return False
    reach = {n: {n} for n in calls}          # node -> branch calls it adds up, through additions only
    for node in graph.nodes:
        if node.op in ("call_function", "call_method") and node.target in _ADDS:
            reach[node] = set().union(*(reach.get(a, set()) for a in node.args if isinstance(a, torch.fx.Node)))
            if len(reach[node]) == len(calls):
                return True
    return False


def summed_groups(model: nn.Module, convs: list[tuple[str, nn.Conv2d]]) -> list[list[int]]:
    """Partition ``convs`` (eligible depthwise convs, in module order) into summed-branch groups: lists of indices,
    ordered by their first member; a conv summed with no other is a group of one."""
    modules = dict(model.named_modules())
    candidates: dict = {}
    for i, (name, conv) in enumerate(convs):
        found = _block_of(name, modules)
        key = (found[0], _geometry(conv)) if found else (None, i)
        candidates.setdefault(key, []).append((i, found))
    groups = []
    for (block, _), members in candidates.items():
        if len(members) > 1:
            prefix = f"{block}." if block else ""
            verdict = _summed(modules[block], [branch[len(prefix):] for _, (_, branch) in members])
            if verdict is None:    # untraceable: trust the reparameterisation convention
                verdict = any(callable(getattr(modules[block], m, None)) for m in REPARAM_METHODS)
            if verdict:
                groups.append([i for i, _ in members])
                continue
        groups += [[i] for i, _ in members]
    return sorted(groups)


def split_kernel(kernel: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Branch kernels (C, s_i, s_i) that sum, each centred in the largest window, to ``kernel`` (C, L, L): each pixel
    is divided equally between the branches whose window covers it."""
    big = kernel.shape[-1]
    cover = torch.zeros(big, big, dtype=kernel.dtype, device=kernel.device)
    for s in sizes:
        a = (big - s) // 2
        cover[a:a + s, a:a + s] += 1
    share = kernel / cover
    return [share[:, (big - s) // 2:(big + s) // 2, (big - s) // 2:(big + s) // 2].clone() for s in sizes]

"""One census loop: pick a classifier for each kernel size, classify, split the result by layer.

The trainer's census, ``python -m analysis report | classify | profile`` and ``measure_profile`` all go through
``take_census``. The rule for choosing a classifier (``ClassifierChoice``), the same everywhere:

1. a classifier the caller gave for that size (a ``KernelClassifier`` or a ``.safetensors`` path; a list is keyed
   by each classifier's own size, a dict by the size it is given for, which must match);
2. else the bundled ``KernelClassifier.pretrained(k)``, which exists for every odd k >= 3;
3. else (an even size, or 1x1: depthwise convs of those sizes that a model walk found) the size is skipped: ``Census.skipped`` names it, with its number of kernels and the reason, and
   ``ClassifierChoice`` reports it through ``log`` once per size for the life of the choice (a trainer's run).

A classifier given for a size that no kernel has is an error (``check_used``): silently falling back to the bundled
classifier for the kernels it was meant for would be a wrong result. Labels are the classifier's coarse labels,
with degenerate kernels (constant, all-zero or non-finite) labelled ``"degenerate"``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from ..core.labels import DEGENERATE
from ..kernels.extract import KernelGroup, KernelSet
from .classifier import ClassificationResult, KernelClassifier

__all__ = ["ClassifierChoice", "SizeCensus", "LayerCensus", "Census", "take_census", "checked_census"]


@dataclass
class SizeCensus:
    """The kernels of one size and what their classifier made of them."""
    group: KernelGroup
    result: ClassificationResult
    classifier: KernelClassifier
    origin: str             # "given", a classifier path, or "pretrained"

    @property
    def labels(self) -> np.ndarray:
        return np.where(self.result.degenerate, DEGENERATE, self.result.labels)


@dataclass
class LayerCensus:
    name: str
    kernel_size: int
    kernels: np.ndarray     # (n, k, k) raw weights, channel order
    labels: np.ndarray      # (n,) coarse labels, "degenerate" for degenerate kernels


@dataclass
class Census:
    source: str
    sizes: dict[int, SizeCensus] = field(default_factory=dict)   # classified sizes, ascending
    layers: list[LayerCensus] = field(default_factory=list)      # classified layers, in model order
    skipped: list[dict] = field(default_factory=list)            # {"size", "n_kernels", "reason"} per skipped size

    def labels(self) -> np.ndarray:
        """Every classified kernel's label, layer by layer in model order."""
        return np.concatenate([layer.labels for layer in self.layers]) if self.layers else np.zeros(0, "<U16")


class ClassifierChoice:
    """Which classifier names the kernels of each size (the rule in the module docstring)."""

    def __init__(self, classifiers=None, *, log: Callable[[str], None] | None = None):
        self.given = _resolve(classifiers)
        self.log = log
        self._bundled: dict[int, tuple[KernelClassifier | None, str | None]] = {}

    def for_size(self, k: int) -> tuple[KernelClassifier | None, str | None, str | None]:
        """(classifier, origin, None), or (None, None, reason) when size ``k`` has none."""
        if k in self.given:
            return (*self.given[k], None)
        if k not in self._bundled:
            try:
                self._bundled[k] = (KernelClassifier.pretrained(k), None)
            except (ValueError, FileNotFoundError) as err:
                hint = f" (classifiers were given for sizes {sorted(self.given)})" if self.given else ""
                self._bundled[k] = (None, f"{err}{hint}")
                if self.log is not None:
                    self.log(f"census: {k}x{k} kernels are skipped: {err}{hint}")
        clf, reason = self._bundled[k]
        return (clf, "pretrained", None) if clf is not None else (None, None, reason)

    def check_used(self, sizes: Iterable[int]) -> None:
        """ValueError if a classifier the caller chose fits none of the kernel ``sizes``."""
        unused = sorted(set(self.given) - set(sizes))
        if unused:
            raise ValueError("classifier " + ", ".join(f"{self.given[k][1]!r} is for {k}x{k} kernels" for k in unused)
                             + f", but the kernels are {', '.join(f'{k}x{k}' for k in sorted(set(sizes)))}; give a "
                             "classifier per kernel size present (or none, for the bundled ones)")


def take_census(kernels: KernelSet, choice: ClassifierChoice | None = None) -> Census:
    """Classify every size of ``kernels`` with ``choice``'s classifier for it (default: the bundled ones) and split
    the labels by layer, in model order."""
    choice = choice if choice is not None else ClassifierChoice()
    census = Census(kernels.source)
    per_layer: dict[str, LayerCensus] = {}
    for group in kernels:
        clf, origin, reason = choice.for_size(group.size)
        if clf is None:
            census.skipped.append({"size": group.size, "n_kernels": len(group), "reason": reason})
            continue
        size = census.sizes[group.size] = SizeCensus(group, clf.classify(group.kernels), clf, origin)
        labels = size.labels
        for i, name in enumerate(group.layer_names):
            rows = group.layer_index == i
            per_layer[name] = LayerCensus(name, group.size, group.kernels[rows], labels[rows])
    for k, n in kernels.excluded.items():   # even / 1x1 depthwise convs: no classifier; reported like any skip
        census.skipped.append({"size": k, "n_kernels": n, "reason": choice.for_size(k)[2]})
    census.skipped.sort(key=lambda s: s["size"])
    census.layers = [per_layer[name] for name in kernels.layer_order if name in per_layer]
    return census


def checked_census(kernels: KernelSet, choice: ClassifierChoice | None = None, *,
                   log: Callable[[str], None] = print) -> Census:
    """``take_census`` for a command: a given classifier that fits no size present is an error (``check_used``),
    each skipped size is logged as ``skipped KxK (N kernels): reason``, and ValueError when no size has one."""
    choice = choice if choice is not None else ClassifierChoice()
    choice.check_used(kernels.sizes)
    census = take_census(kernels, choice)
    for s in census.skipped:
        log(f"skipped {s['size']}x{s['size']} ({s['n_kernels']} kernels): {s['reason']}")
    if not census.sizes:
        raise ValueError(f"no classifier for any kernel size in {kernels.source} (sizes {kernels.sizes})")
    return census


def _resolve(classifiers) -> dict[int, tuple[KernelClassifier, str]]:
    """{size: (classifier, origin)} from None, one classifier / path, a list of them, or a dict {size: ...}."""
    if classifiers is None:
        return {}
    if isinstance(classifiers, Mapping):
        pairs = list(classifiers.items())
    else:
        items = classifiers if isinstance(classifiers, (list, tuple)) else [classifiers]
        pairs = [(None, c) for c in items]
    out: dict[int, tuple[KernelClassifier, str]] = {}
    for size, clf in pairs:
        origin = "given"
        if not isinstance(clf, KernelClassifier):
            origin = os.fspath(clf)
            clf = KernelClassifier.load(clf)        # FileNotFoundError / ValueError name the path
        if size is not None and int(size) != clf.size:
            raise ValueError(f"classifier {origin!r} is for {clf.size}x{clf.size} kernels but was given for "
                             f"size {size}")
        if clf.size in out:
            raise ValueError(f"two classifiers given for {clf.size}x{clf.size} kernels: {out[clf.size][1]!r} and "
                             f"{origin!r}")
        out[clf.size] = (clf, origin)
    return out

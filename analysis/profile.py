"""``profile``: per-layer family mixes of a trained model, for ``dog_init_(model, mix=load_profile(path))``.

For every depthwise layer (in model order) the kernels are classified with the bundled (or given) classifier of
their size, and the shares of the ``dog_init`` families among the layer's *clustered* kernels are renormalised to 1
(kernels named "other" belong to no family ``dog_init`` can draw, so they are left out like unclustered ones). The
result is a ``dog_init.Profile``; see ``dog_init.profile`` for the format and for how another model's layers are
matched to it (relative depth, kernel size).

>>> profile = measure_profile("timm:convnext_tiny.fb_in1k")
>>> dog_init.save_profile(profile, "convnext_tiny.profile.json")
"""
from __future__ import annotations

import numpy as np

from dog_init import FAMILIES, LayerProfile, Profile

from .classifier import KernelClassifier
from .kernels import extract_depthwise

__all__ = ["measure_profile"]


def _family_mix(labels: np.ndarray) -> dict[str, float]:
    counts = {f: int(np.count_nonzero(labels == f)) for f in FAMILIES}
    total = sum(counts.values())
    return {f: c / total for f, c in counts.items() if c} if total else {}


def measure_profile(source, *, checkpoint=None, classifiers: dict[int, KernelClassifier] | None = None,
                    log=print) -> Profile:
    """The ``Profile`` of ``source`` (anything ``extract_depthwise`` takes). Sizes without a classifier (given in
    ``classifiers`` or bundled) are left out and reported through ``log``; ValueError if none is left."""
    kernels = extract_depthwise(source, checkpoint=checkpoint)
    classifiers = dict(classifiers or {})
    per_layer, all_labels = {}, []
    for group in kernels:
        clf = classifiers.get(group.size)
        if clf is None:
            try:
                clf = KernelClassifier.pretrained(group.size)
            except ValueError as err:
                log(f"profile: {group.size}x{group.size} layers left out: {err}")
                continue
        labels = clf.classify(group.kernels).labels
        all_labels.append(labels)
        for i, name in enumerate(group.layer_names):
            mine = labels[group.layer_index == i]
            per_layer[name] = (group.size, len(mine), float(np.isin(mine, FAMILIES).mean()), _family_mix(mine))
    if not per_layer:
        raise ValueError(f"no kernel size of {kernels.source} has a classifier (sizes {kernels.sizes})")
    order = kernels.layer_order
    n = len(order)
    layers = tuple(LayerProfile(name, k, i / (n - 1) if n > 1 else 0.5, count, clustered, mix)
                   for i, name in enumerate(order) if name in per_layer
                   for k, count, clustered, mix in [per_layer[name]])
    return Profile(kernels.source, layers, _family_mix(np.concatenate(all_labels)))

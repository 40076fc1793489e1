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

from dog_init import FAMILIES, LayerProfile, Profile, save_profile

from ..kernels.extract import extract_depthwise
from .census import ClassifierChoice, checked_census

__all__ = ["measure_profile", "profile_table", "write_profile"]


def _family_mix(labels: np.ndarray) -> dict[str, float]:
    counts = {f: int(np.count_nonzero(labels == f)) for f in FAMILIES}
    total = sum(counts.values())
    return {f: c / total for f, c in counts.items() if c} if total else {}


def measure_profile(source, *, checkpoint=None, classifiers=None, log=print) -> Profile:
    """The ``Profile`` of ``source`` (anything ``extract_depthwise`` takes), through the census loop: classifiers
    as ``ClassifierChoice`` takes them (or a ``ClassifierChoice``); sizes without one are left out and reported
    through ``log``; ValueError if none is left, or if a given classifier fits no size present."""
    kernels = extract_depthwise(source, checkpoint=checkpoint)
    choice = classifiers if isinstance(classifiers, ClassifierChoice) else ClassifierChoice(classifiers)
    census = checked_census(kernels, choice, log=log)
    n = len(kernels.layer_order)
    depth = {name: i / (n - 1) if n > 1 else 0.5 for i, name in enumerate(kernels.layer_order)}
    layers = tuple(LayerProfile(layer.name, layer.kernel_size, depth[layer.name], len(layer.labels),
                                float(np.isin(layer.labels, FAMILIES).mean()), _family_mix(layer.labels))
                   for layer in census.layers)
    # The overall mix pools the sizes in size order, as the labels were classified.
    pooled = np.concatenate([size.labels for size in census.sizes.values()])
    return Profile(kernels.source, layers, _family_mix(pooled))


def profile_table(profile: Profile) -> str:
    """One line per layer: kernel size, relative depth, clustered share, family mix of the clustered kernels."""
    width = max(len(layer.name) for layer in profile.layers)
    lines = [f"{'layer':<{width}}  {'k':>2}  {'depth':>5}  {'clust.':>6}  family mix of the clustered kernels"]
    for layer in profile.layers:
        mix = ", ".join(f"{f} {100 * v:.0f}%" for f, v in sorted(layer.mix.items(), key=lambda x: -x[1]))
        lines.append(f"{layer.name:<{width}}  {layer.kernel_size:>2}  {layer.depth:>5.2f}  "
                     f"{100 * layer.clustered:>5.1f}%  {mix or '(none clustered)'}")
    return "\n".join(lines)


def write_profile(source, out, *, checkpoint=None, classifiers=None, log=print) -> Profile:
    """``python -m analysis profile``: measure, print the table, save the profile to ``out`` (JSON)."""
    result = measure_profile(source, checkpoint=checkpoint, classifiers=classifiers, log=log)
    log(profile_table(result))
    save_profile(result, out)
    log(f"wrote {out}: {len(result.layers)} layers; use dog_init_(model, mix=dog_init.load_profile({str(out)!r})) "
        "or init.profile in a training recipe")
    return result

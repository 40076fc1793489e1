"""An independent template matcher (its own parameter grid, nearest mean-centred cosine) must recognise the family of
kernels sampled by dog_init: the families are distinct and each sampled kernel looks like its family."""
from __future__ import annotations

import collections
import itertools
import math

import pytest
import torch

import dog_init
from dog_init import FAMILIES, render


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grid(**values) -> dict[str, torch.Tensor]:
    """Every combination of the given parameter values, as render() parameters."""
    combos = list(itertools.product(*values.values()))
    return {name: torch.tensor([c[i] for c in combos], dtype=torch.float32) for i, name in enumerate(values)}


def template_bank(size: int) -> tuple[torch.Tensor, list[str]]:
    """Templates on a fixed parameter grid (round values, zero offset), not the sampler's random draws."""
    z = (0.0,)
    grids = {
        "on_centre": _grid(sigma=(0.75, 1.05), ratio=(2.0, 2.6), surround=(0.7, 0.95), elongation=(1.0, 1.15),
                           theta=(0.0, 90.0), dx=z, dy=z),
        "first_derivative": _grid(sigma=(0.8, 1.15), ratio=(2.2,), surround=(0.1, 0.45), elongation=(1.1, 1.3),
                                  theta=tuple(float(t) for t in range(0, 360, 15)), dx=z, dy=z),
        "second_derivative": _grid(sigma=(0.8, 1.05), ratio=(2.2,), surround=(0.1, 0.45), elongation=(1.05, 1.2),
                                   theta=(-5.0, 0.0, 5.0), kind=(0.0, 1.0, 2.0), sign=(1.0, -1.0), dx=z, dy=z),
        "on_cross": _grid(width=(0.45, 0.62), length=(2.2, 3.0), peak=(0.1, 0.35), theta=(-5.0, 0.0, 5.0),
                          dx=z, dy=z),
        "on_square": _grid(half=(0.7, 0.9), offset=(0.6, 0.9), softness=(0.12,), corner=(0.0, 1.0, 2.0, 3.0),
                           dx=z, dy=z),
    }
    for on, off in [("on_centre", "off_centre"), ("on_cross", "off_cross"), ("on_square", "off_square")]:
        grids[off] = grids[on]
    templates, labels = [], []
    for family in FAMILIES:
        bank = render(family, size, grids[family])
        templates.append(bank)
        labels += [family] * len(bank)
    return torch.cat(templates), labels


def _centred_unit(k: torch.Tensor) -> torch.Tensor:
    flat = k.flatten(1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def classify(kernels: torch.Tensor, templates: torch.Tensor, labels: list[str]) -> list[str]:
    """Nearest template by mean-centred cosine similarity (signed: off = -on must not match on)."""
    similarity = _centred_unit(kernels) @ _centred_unit(templates).T
    return [labels[i] for i in similarity.argmax(dim=1).tolist()]


def confusion_table(truth: list[str], predicted: list[str]) -> str:
    counts = collections.Counter(zip(truth, predicted))
    head = " " * 18 + " ".join(f"{f[:9]:>9}" for f in FAMILIES)
    return "\n".join([head] + [f"{t:>18}" + " ".join(f"{counts[(t, p)]:>9}" for p in FAMILIES) for t in FAMILIES])


@pytest.mark.parametrize("size", [5, 7])
def test_template_matcher_recovers_sampled_families(size):
    """An independent nearest-template classifier recovers the family of >= 85 % of kernels from
    sample(mix="uniform"), so the families are distinct and each sampled kernel looks like its family."""
    templates, labels = template_bank(size)
    kernels, truth = dog_init.sample(2000, size, "uniform", generator=gen(123))
    predicted = classify(kernels, templates, labels)
    accuracy = sum(p == t for p, t in zip(predicted, truth)) / len(truth)
    print(f"\n{size}x{size} template matcher accuracy {accuracy:.4f}\n{confusion_table(truth, predicted)}")
    assert accuracy >= 0.85, f"accuracy {accuracy:.3f}\n{confusion_table(truth, predicted)}"
    # every family is recognised on its own, not just on average
    for family in FAMILIES:
        hits = [p == t for p, t in zip(predicted, truth) if t == family]
        assert sum(hits) / len(hits) >= 0.7, (family, confusion_table(truth, predicted))


def test_template_matcher_is_not_trivial():
    """Sanity check of the matcher itself: shuffled labels (wrong family per kernel) score near chance."""
    templates, labels = template_bank(7)
    kernels, truth = dog_init.sample(800, 7, "uniform", generator=gen(5))
    predicted = classify(kernels, templates, labels)
    shifted = truth[1:] + truth[:1]
    agreement = sum(p == t for p, t in zip(predicted, shifted)) / len(truth)
    assert agreement < 0.4
    assert math.isclose(len(set(predicted)), len(FAMILIES))

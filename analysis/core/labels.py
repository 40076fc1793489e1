"""Naming clusters (Sec. 3.3): a template bank of DoG families, spectrum intervals, and manual overrides.

The paper names intervals of code space by looking at the reconstruction spectrum. We automate that step: every
spectrum kernel is matched against a bank of ``dog_init`` templates (many sigmas, orientations, offsets) by
centred cosine similarity, runs of equal names become intervals, and an interval whose best match is below
``min_similarity`` is "other". A JSON file of intervals -> names overrides the automatic result (the manual step).
Fine labels keep subtypes: ``first_derivative/right|up|left|down``, ``second_derivative/uu+|uu-|vv+|vv-|uv+|uv-``,
``on_square/top_left`` and so on.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from dog_init import FAMILIES, SECOND_DERIVATIVE_KINDS, SQUARE_CORNERS, render

from .preprocess import to_basis
from .synthetic import CROSS_REACH

__all__ = ["families_for", "OTHER", "UNCLUSTERED", "TemplateBank", "template_bank", "match_templates", "Interval",
           "spectrum_intervals", "label_codes", "load_intervals", "save_intervals", "LABELS", "fine_labels",
           "check_intervals"]

OTHER, UNCLUSTERED = "other", "unclustered"
DEGENERATE = "degenerate"   # what censuses and reports call a degenerate kernel (no classifier label)
LABELS: tuple[str, ...] = (*FAMILIES, OTHER, UNCLUSTERED)
DIRECTIONS = ("right", "up", "left", "down")   # first-derivative subtypes, theta 0 / 90 / 180 / 270 degrees


def direction_index(theta):
    """Index into ``DIRECTIONS`` of the axis nearest to ``theta`` (degrees; scalar or array)."""
    return np.round(np.asarray(theta) / 90.0).astype(np.int64) % 4


@dataclass(frozen=True)
class TemplateBank:
    kernels: np.ndarray      # (T, k, k)
    coords: np.ndarray       # (T, k*k - 1): centred, unit-norm basis coordinates
    names: np.ndarray        # (T,) coarse family
    fine: np.ndarray         # (T,) fine subtype
    params: dict = None      # parameter name -> (T,) float32 rendering values, NaN where a family lacks it


def _grid(family: str, size: int, axes: dict[str, list], fine):
    """([kernels], names, fine names, parameters) of every combination of ``axes``."""
    keys = list(axes)
    rows = list(itertools.product(*(axes[k] for k in keys)))
    params = {k: torch.tensor([float(r[i]) for r in rows]) for i, k in enumerate(keys)}
    kernels = render(family, size, params)
    return [kernels], [family] * len(rows), [fine(dict(zip(keys, r))) for r in rows], params


def families_for(size: int) -> tuple[str, ...]:
    """The families a ``size`` x ``size`` kernel can show (Sec. 4): squares only in 3x3 / 5x5 nets; no crosses at
    3x3, where a cross and a centre-surround blob are the same 9 pixels."""
    return tuple(f for f in FAMILIES if not ("square" in f and size > 5) and not ("cross" in f and size == 3))


@lru_cache(maxsize=None)
def template_bank(size: int) -> TemplateBank:
    """Noise-free templates of the families of ``families_for(size)``: thousands of kernels spanning their shapes."""
    offsets = [-0.5, 0.0, 0.5]
    dog = {"ratio": [1.6, 2.5, 4.0], "surround": [0.0, 0.5, 1.0], "elongation": [1.0, 1.6],
           "dx": offsets, "dy": offsets}
    # A DoG elongated much beyond 1.25 is a second-derivative line detector, so centre templates stay round. Where
    # squares exist (k <= 5) a blob half a pixel off in x and y has a 2x2 plateau, the square of those nets, so centre
    # templates stay within a quarter pixel of the centre there.
    near = [-0.25, 0.0, 0.25] if size <= 5 else offsets
    centre = {"sigma": [0.5, 0.8, 1.2, 1.8], **dog, "surround": [0.4, 0.7, 1.0], "elongation": [1.0, 1.25],
              "theta": [0.0, 90.0], "dx": near, "dy": near}
    deriv = {"sigma": [0.6, 0.9, 1.4], **dog}
    parts = []
    for family in ("on_centre", "off_centre"):
        parts.append(_grid(family, size, centre, lambda p, f=family: f))
    parts.append(_grid("first_derivative", size, {**deriv, "theta": list(range(0, 360, 30))},
                       lambda p: "first_derivative/" + DIRECTIONS[direction_index(p["theta"])]))
    parts.append(_grid("second_derivative", size,
                       {**deriv, "theta": [-30.0, 0.0, 30.0], "kind": [0, 1, 2], "sign": [1, -1]},
                       lambda p: "second_derivative/" + SECOND_DERIVATIVE_KINDS[int(p["kind"])]
                       + ("+" if p["sign"] > 0 else "-")))
    # Arms at least 3x longer than wide, else a "cross" is just a blob and steals on-centre kernels.
    # From 9x9 on, a cross's arms reach past a 5x5 kernel's frame: a shorter "cross" is a 5x5 blob padded into a
    # larger frame (real 5x5 centre-surround kernels keep their name when embedded; analysis.classify.bundle).
    lengths = [2.2, 3.0, 4.5] if size < 9 else [2.9, 4.5, max(5.5, CROSS_REACH * size)]
    cross = {"width": [0.4, 0.55, 0.7], "length": lengths, "peak": [0.0, 0.3, 0.6], "theta": [-15, 0, 15],
             "dx": offsets, "dy": offsets}
    for family in ("on_cross", "off_cross"):
        parts.append(_grid(family, size, cross, lambda p, f=family: f))
    # Blocks at least 1.5 px wide and clearly off-centre; smaller ones are offset on-centre blobs.
    square = {"half": [0.75, 1.0, 1.3], "offset": [0.5, 0.75, 1.0, 1.4], "softness": [0.1, 0.3],
              "corner": [0, 1, 2, 3], "dx": [0.0], "dy": [0.0]}
    for family in ("on_square", "off_square"):
        parts.append(_grid(family, size, square, lambda p, f=family: f"{f}/{SQUARE_CORNERS[int(p['corner'])]}"))
    kernels = torch.cat([k for ks, *_ in parts for k in ks]).numpy()
    names = np.array([n for _, ns, *_ in parts for n in ns])
    fine = np.array([f for *_, fs, _ in parts for f in fs])
    keep = np.isin(names, families_for(size))
    # Kept so a template can seed a parameter fit (analysis.fit) from where it lies.
    keys = dict.fromkeys(k for *_, p in parts for k in p)
    params = {k: np.concatenate([p[k].numpy() if k in p else np.full(len(p["dx"]), np.nan, np.float32)
                                 for *_, p in parts])[keep] for k in keys}
    return TemplateBank(kernels[keep], to_basis(kernels[keep]), names[keep], fine[keep], params)


def match_templates(kernels, *, min_similarity: float = 0.75, bank: TemplateBank | None = None):
    """Best template per kernel: (names, fine names, similarity); names are "other" below ``min_similarity``."""
    coords = to_basis(kernels)
    bank = bank or template_bank(int(np.shape(kernels)[-1]))
    sims = coords @ bank.coords.T
    best = sims.argmax(axis=1)
    similarity = sims[np.arange(len(coords)), best]
    weak = similarity < min_similarity
    names = np.where(weak, OTHER, bank.names[best])
    fine = np.where(weak, OTHER, bank.fine[best])
    return names, fine, similarity


@dataclass(frozen=True)
class Interval:
    lo: float        # code interval [lo, hi); the last one includes 1
    hi: float
    name: str        # coarse family or "other"
    fine: str


def spectrum_intervals(codes: np.ndarray, names, fine) -> list[Interval]:
    """Merge runs of equal (name, fine) along sorted spectrum ``codes`` into intervals covering [0, 1]."""
    codes = np.asarray(codes, dtype=np.float64)
    runs = []
    for i, key in enumerate(zip(names, fine)):
        if runs and runs[-1][1] == key:
            runs[-1][2] = i
        else:
            runs.append([i, key, i])
    intervals = []
    for j, (first, (name, fine_name), last) in enumerate(runs):
        lo = 0.0 if j == 0 else (codes[first - 1] + codes[first]) / 2
        hi = 1.0 if j == len(runs) - 1 else (codes[last] + codes[last + 1]) / 2
        intervals.append(Interval(float(lo), float(hi), str(name), str(fine_name)))
    return intervals


def label_codes(codes, intervals: list[Interval]) -> tuple[np.ndarray, np.ndarray]:
    """Coarse and fine names of the intervals that ``codes`` fall in (vectorised ``searchsorted``)."""
    edges = np.array([iv.hi for iv in intervals[:-1]])
    which = np.searchsorted(edges, np.asarray(codes), side="right")
    return (np.array([iv.name for iv in intervals])[which], np.array([iv.fine for iv in intervals])[which])


def save_intervals(intervals: list[Interval], path) -> None:
    Path(path).write_text(json.dumps([asdict(iv) for iv in intervals], indent=1))


def load_intervals(path) -> list[Interval]:
    """Read a manual interval file: a JSON list of {"lo", "hi", "name", "fine"} covering [0, 1] in order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interval file {str(path)!r} not found")
    try:
        raw = json.loads(path.read_text())
        intervals = [Interval(float(r["lo"]), float(r["hi"]), str(r["name"]), str(r.get("fine", r["name"])))
                     for r in raw]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(path)!r} is not a list of {{lo, hi, name, fine}} intervals: {err}") from None
    check_intervals(intervals, str(path))
    return intervals


def fine_labels(name: str) -> tuple[str, ...]:
    """The fine labels an interval named ``name`` may carry: the name itself, or one of its subtypes."""
    subtypes = {"first_derivative": DIRECTIONS,
                "second_derivative": tuple(f"{k}{s}" for k in SECOND_DERIVATIVE_KINDS for s in "+-"),
                "on_square": SQUARE_CORNERS, "off_square": SQUARE_CORNERS}.get(name, ())
    return (name, *(f"{name}/{sub}" for sub in subtypes))


def check_intervals(intervals: list[Interval], where: str = "intervals") -> None:
    """ValueError naming the first bad interval: names and fine labels must be known, bounds finite, and the
    intervals must cover [0, 1] in order without gaps or overlaps."""
    if not intervals:
        raise ValueError(f"{where}: no intervals")
    bad = [iv.name for iv in intervals if iv.name not in LABELS[:-1]]
    if bad:
        raise ValueError(f"{where}: unknown name {bad[0]!r}; allowed: {', '.join(LABELS[:-1])}")
    for iv in intervals:
        if iv.fine not in fine_labels(iv.name):
            raise ValueError(f"{where}: fine label {iv.fine!r} does not belong to {iv.name!r}; allowed: "
                             f"{', '.join(fine_labels(iv.name))}")
        if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
            raise ValueError(f"{where}: interval bounds must be finite numbers in [0, 1], got [{iv.lo}, {iv.hi}] "
                             f"for {iv.fine!r}")
    if abs(intervals[0].lo) > 1e-9 or abs(intervals[-1].hi - 1) > 1e-9:
        raise ValueError(f"{where}: intervals must cover [0, 1], got [{intervals[0].lo}, {intervals[-1].hi}]")
    for a, b in zip(intervals, intervals[1:]):
        if abs(a.hi - b.lo) > 1e-9 or b.hi < b.lo:
            raise ValueError(f"{where}: intervals must be contiguous and ordered; gap or overlap at {a.hi}")

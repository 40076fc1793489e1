"""Parameter spaces of the family fit (``analysis.fit``): where each ``dog_init`` parameter may go, and how.

Every continuous parameter ``x`` of ``dog_init.render`` is written through an unconstrained variable ``z``:

    bounded  x = lo + (hi - lo) sigmoid(z)                (sigmas, ratios, weights, offsets in pixels)
    angle    x = degrees(z), wrapped on output             (theta of centre families modulo 180, of first
                                                            derivatives modulo 360; degrees, counter-clockwise
                                                            from +x as in ``dog_init.families``)

so gradient steps on ``z`` (Adam) never leave the valid range, with no clipping. Bounds are wider than
``dog_init.PARAMS`` and ``analysis.core.synthetic.WIDE_PARAMS`` so kernels drawn from other ranges still fit, but narrow
where two families would otherwise describe one shape:

* centre families stay nearly round (elongation <= 1.3): a longer DoG *is* a second-derivative line detector,
  the same rule as the template bank (``analysis.core.labels``);
* second derivatives and crosses keep ``theta`` in (-45, 45): rotating them by 90 degrees gives another subtype
  (``uu`` <-> ``vv``, ``uv+`` <-> ``uv-``) or the same cross, so each shape has one name;
* where squares exist (k <= 5) centre families stay within half a pixel of the centre: a blob further off is the
  corner block of those nets, as in the template bank.

Discrete parameters (``kind`` and ``sign`` of second derivatives, ``corner`` of squares) are not optimised: each
start keeps those of the template it starts from, so every subtype is its own start group.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dog_init import FAMILIES, SECOND_DERIVATIVE_KINDS, SQUARE_CORNERS

from ..core.labels import DIRECTIONS, direction_index

__all__ = ["Space", "SPACES", "spaces_for", "PARAM_NAMES", "DISCRETE", "start_group", "fine_name", "angle_error"]

_SHIFT = (-1.5, 1.5)          # sub-pixel to 1.5-pixel centre offsets (pixels)
DISCRETE = ("kind", "sign", "corner")


@dataclass(frozen=True)
class Space:
    """The fitted parameters of one family: ``bounds[name]`` is ``(lo, hi)`` or ``None`` for a free angle; for a
    name in ``relative`` the bounds are multiples of the parameter it names (listed before it)."""
    family: str
    bounds: dict[str, tuple[float, float] | None]
    period: float | None = None     # wrap of the free angle theta, degrees
    discrete: tuple[str, ...] = ()  # taken from the start template, never optimised
    relative: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.bounds)

    def to_free(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """(M, P) unconstrained variables of the parameter values (template values inside the bounds)."""
        cols = []
        for name, bound in self.bounds.items():
            x = values[name].to(torch.float32)
            if name in self.relative:
                x = x / values[self.relative[name]].to(torch.float32)
            if bound is None:
                cols.append(torch.deg2rad(x))
            else:
                lo, hi = bound
                # A template on a bound (elongation 1, surround 0) starts just inside, where the sigmoid still moves.
                frac = ((x - lo) / (hi - lo)).clamp(0.1, 0.9)
                cols.append(torch.logit(frac))
        return torch.stack(cols, dim=1)

    def from_free(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameter values (each (M,)) of the unconstrained variables z (M, P); differentiable."""
        out = {}
        for j, (name, bound) in enumerate(self.bounds.items()):
            out[name] = torch.rad2deg(z[:, j]) if bound is None else bound[0] + (bound[1] - bound[0]) * \
                torch.sigmoid(z[:, j])
            if name in self.relative:
                out[name] = out[name] * out[self.relative[name]]
        return out

    def wrap(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Free angles into [0, period): the convention of ``dog_init.PARAMS`` (centre [0, 180), first
        derivatives [0, 360))."""
        if self.period is not None and "theta" in values:
            values = {**values, "theta": np.mod(values["theta"], self.period)}
        return values


_DOG = {"sigma": (0.25, 3.0), "ratio": (1.2, 5.0), "surround": (0.0, 1.5)}
SPACES: dict[str, Space] = {
    **{f: Space(f, {**_DOG, "elongation": (1.0, 1.3), "theta": None, "dx": _SHIFT, "dy": _SHIFT}, period=180.0)
       for f in ("on_centre", "off_centre")},
    "first_derivative": Space("first_derivative", {**_DOG, "elongation": (1.0, 2.0), "theta": None,
                                                   "dx": _SHIFT, "dy": _SHIFT}, period=360.0),
    "second_derivative": Space("second_derivative", {**_DOG, "elongation": (1.0, 2.0), "theta": (-45.0, 45.0),
                                                     "dx": _SHIFT, "dy": _SHIFT}, discrete=("kind", "sign")),
    # Arms at least 2.5x longer than wide (dog_init.PARAMS reaches 2.6) and a centre peak at most 0.6: shorter or
    # peakier crosses are blobs, and would take on- and off-centre kernels (the template bank's rule too).
    **{f: Space(f, {"width": (0.2, 1.2), "length": (2.5, 12.0), "peak": (0.0, 0.6), "theta": (-45.0, 45.0),
                    "dx": _SHIFT, "dy": _SHIFT}, relative={"length": "width"}) for f in ("on_cross", "off_cross")},
    # The block's centre is set by offset and corner; dx, dy only let it leave the diagonal a little.
    **{f: Space(f, {"half": (0.3, 2.5), "offset": (0.0, 2.0), "softness": (0.03, 0.6), "dx": (-0.5, 0.5),
                    "dy": (-0.5, 0.5)}, discrete=("corner",)) for f in ("on_square", "off_square")},
}
assert set(SPACES) == set(FAMILIES), "every family needs a parameter space"



def spaces_for(size: int) -> dict[str, Space]:
    """``SPACES`` for k x k kernels: at k <= 5, where squares exist, centre offsets within half a pixel."""
    if size > 5:
        return SPACES
    near = {"dx": (-0.5, 0.5), "dy": (-0.5, 0.5)}
    return {f: Space(f, {**s.bounds, **near}, s.period, s.discrete, s.relative) if f in ("on_centre", "off_centre")
            else s
            for f, s in SPACES.items()}


# Every parameter name of every family, in a fixed order: the columns of FamilyFit.params.
PARAM_NAMES: tuple[str, ...] = tuple(dict.fromkeys(n for s in SPACES.values() for n in (*s.names, *s.discrete)))


def start_group(family: str, fine: str) -> str:
    """Start-group key of a template: its subtype where the subtype is a discrete parameter, else its family
    (a first derivative's direction is the continuous theta, so one group covers all four)."""
    return fine if SPACES[family].discrete else family


def fine_name(family: str, values: dict[str, np.ndarray]) -> np.ndarray:
    """Subtype names in ``analysis.core.labels``' convention from fitted parameters (M,) of one family."""
    n = len(next(iter(values.values())))
    if family == "first_derivative":
        return np.array([f"{family}/{DIRECTIONS[q]}" for q in direction_index(values["theta"])], dtype=object)
    if family == "second_derivative":
        kinds = np.asarray(values["kind"]).astype(np.int64)
        return np.array([f"{family}/{SECOND_DERIVATIVE_KINDS[k]}{'+' if s > 0 else '-'}"
                         for k, s in zip(kinds, values["sign"])], dtype=object)
    if family in ("on_square", "off_square"):
        return np.array([f"{family}/{SQUARE_CORNERS[int(c)]}" for c in values["corner"]], dtype=object)
    return np.full(n, family, dtype=object)


def angle_error(a, b, period: float = 360.0) -> np.ndarray:
    """Smallest absolute difference of angles a and b (degrees) modulo ``period``."""
    d = np.mod(np.asarray(a, np.float64) - np.asarray(b, np.float64), period)
    return np.minimum(d, period - d)


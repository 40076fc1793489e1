"""Closed-form depthwise filter families of Babaiee et al., "Unveiling the Unseen" (ICLR 2024).

Every family is a function of pixel coordinates on a ``size x size`` grid whose origin is the kernel centre,
``x`` pointing right and ``y`` pointing *up* (row 0 is the top row), so an angle ``theta`` (degrees,
counter-clockwise from +x) reads the way the kernel is drawn. Rotated coordinates are

    u =  (x - dx) cos(theta) + (y - dy) sin(theta),     v = -(x - dx) sin(theta) + (y - dy) cos(theta)

with a sub-pixel centre offset ``(dx, dy)``. Sigmas are in pixels, not fractions of the kernel, so a 27x27 kernel
keeps the pattern in a small central area as the paper observed for large-kernel nets (Sec. 5).

The anisotropic, area-normalised Gaussian is ``G(s) = exp(-u^2 / 2(s / e)^2 - v^2 / 2(s e)^2) / (2 pi s^2)`` with
elongation ``e >= 1`` along ``v`` (so derivative kernels are edge / line detectors across ``u``), and the
Difference of Gaussians is ``DoG = G(sigma) - surround * G(ratio * sigma)``.

=====================  ===========================================================================================
family                 formula (paper section)
=====================  ===========================================================================================
on_centre              ``DoG``  (Sec. 4, Fig. 5: centre above surround)
off_centre             ``-DoG``
first_derivative       ``-d DoG / du``: positive lobe on the side ``theta`` points to; the paper's 4 subtypes are
                       theta = 0 (right), 90 (up), 180 (left), 270 (down)
second_derivative      ``-sign d2 DoG / du2`` (kind ``uu``), ``-sign d2 DoG / dv2`` (``vv``) or
                       ``sign d2 DoG / du dv`` (``uv``): the paper's 6 subtypes are the 3 kinds x 2 signs
on_cross / off_cross   ``+-(A(u, v) + A(v, u) + peak * exp(-r^2 / 2 width^2))`` with the elongated arm
                       ``A(u, v) = exp(-u^2 / 2 length^2 - v^2 / 2 width^2)``: Appendix B's sum of two orthogonal
                       elongated Gaussians, plus the denser centre the paper sees in real cross kernels
on_square / off_square ``+-box(x - cx) box(y - cy)``, a soft block of half-width ``half`` centred ``offset`` pixels
                       toward corner ``corner`` (0 = top-right, 1 = top-left, 2 = bottom-left, 3 = bottom-right),
                       ``box(t) = sigmoid((half - |t|) / softness)``: the squares of 3x3 / 5x5 nets (Sec. 4)
=====================  ===========================================================================================

Every generated kernel has unit L2 norm; callers rescale (see ``dog_init_``'s ``scale``).
"""
from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

__all__ = ["FAMILIES", "PARAMS", "Uniform", "Choice", "AxisAngle", "generate", "sample_params", "render",
           "check_size", "check_n", "as_int", "DOMAINS", "SPECS", "SECOND_DERIVATIVE_KINDS", "SQUARE_CORNERS"]

FAMILIES: tuple[str, ...] = ("on_centre", "off_centre", "on_cross", "off_cross",
                             "first_derivative", "second_derivative", "on_square", "off_square")
SECOND_DERIVATIVE_KINDS: tuple[str, ...] = ("uu", "vv", "uv")
SQUARE_CORNERS: tuple[str, ...] = ("top_right", "top_left", "bottom_left", "bottom_right")


# --- parameter distributions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Uniform:
    """Continuous parameter drawn uniformly from ``[low, high]``."""
    low: float
    high: float

    def draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.rand(n, generator=generator)


@dataclass(frozen=True)
class Choice:
    """Discrete parameter drawn uniformly from ``values`` (numbers)."""
    values: tuple[float, ...]

    def draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        index = torch.randint(len(self.values), (n,), generator=generator)
        return torch.tensor(self.values, dtype=torch.float32)[index]


@dataclass(frozen=True)
class AxisAngle:
    """Angle in degrees: one of ``multiples`` x 90 degrees plus uniform jitter in ``[-jitter, jitter]``."""
    jitter: float
    multiples: tuple[int, ...] = (0, 1, 2, 3)

    def draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        base = Choice(tuple(90.0 * m for m in self.multiples)).draw(n, generator)
        return base + Uniform(-self.jitter, self.jitter).draw(n, generator)


_OFFSET = Uniform(-0.25, 0.25)  # sub-pixel centre offset, pixels

# Default ranges the sampler draws from. Keys are drawn in this order, which is why off = -on under one seed.
PARAMS: dict[str, dict[str, Uniform | Choice | AxisAngle]] = {
    "centre": {"sigma": Uniform(0.6, 1.2),        # centre sigma, pixels
               "ratio": Uniform(1.6, 3.0),        # surround sigma / centre sigma
               "surround": Uniform(0.6, 1.0),     # surround weight a (1 = zero-integral DoG)
               "elongation": Uniform(1.0, 1.2),   # e: sigma_u = sigma / e, sigma_v = sigma e
               "theta": Uniform(0.0, 180.0),      # degrees; only matters when elongated
               "dx": _OFFSET, "dy": _OFFSET},
    "first_derivative": {"sigma": Uniform(0.7, 1.3), "ratio": Uniform(1.6, 3.0), "surround": Uniform(0.0, 0.6),
                         "elongation": Uniform(1.0, 1.4),
                         "theta": AxisAngle(jitter=15.0),   # the paper's 4 axis subtypes, jittered
                         "dx": _OFFSET, "dy": _OFFSET},
    "second_derivative": {"sigma": Uniform(0.7, 1.2), "ratio": Uniform(1.6, 3.0), "surround": Uniform(0.0, 0.6),
                          "elongation": Uniform(1.0, 1.3),
                          "theta": AxisAngle(jitter=10.0, multiples=(0,)),
                          "kind": Choice((0.0, 1.0, 2.0)),   # index into SECOND_DERIVATIVE_KINDS
                          "sign": Choice((1.0, -1.0)),       # +1: positive centre line / positive (+,+) quadrant
                          "dx": _OFFSET, "dy": _OFFSET},
    "cross": {"width": Uniform(0.4, 0.7),        # arm sigma across the arm, pixels
              "length": Uniform(1.8, 3.5),       # arm sigma along the arm, pixels
              "peak": Uniform(0.0, 0.5),         # extra centre peak, relative to one arm's height
              "theta": AxisAngle(jitter=10.0, multiples=(0,)),
              "dx": _OFFSET, "dy": _OFFSET},
    "square": {"half": Uniform(0.6, 1.0),        # half-width of the block, pixels
               "offset": Uniform(0.5, 1.0),      # block centre's distance from the kernel centre along x and y
               "softness": Uniform(0.08, 0.2),   # edge width, pixels
               "corner": Choice((0.0, 1.0, 2.0, 3.0)),  # index into SQUARE_CORNERS
               "dx": _OFFSET, "dy": _OFFSET},
}

# Where each parameter is defined, checked for values the caller fixes: "> 0" (a Gaussian of sigma 0 is 0/0 = NaN),
# ">= 0", ">= 1" (an elongation below 1 swaps u and v, so "uu" would mean "vv"), "finite", or a set of values.
DOMAINS: dict[str, str | tuple[float, ...]] = {
    "sigma": "> 0", "ratio": "> 0", "surround": ">= 0", "elongation": ">= 1", "theta": "finite",
    "dx": "finite", "dy": "finite", "kind": (0.0, 1.0, 2.0), "sign": (1.0, -1.0),
    "width": "> 0", "length": "> 0", "peak": ">= 0",
    "half": "> 0", "offset": ">= 0", "softness": "> 0", "corner": (0.0, 1.0, 2.0, 3.0),
}
_RULES = {"> 0": lambda t: t > 0, ">= 0": lambda t: t >= 0, ">= 1": lambda t: t >= 1,
          "finite": lambda t: torch.ones_like(t, dtype=torch.bool)}


def _check_domain(family: str, name: str, value: torch.Tensor) -> None:
    """ValueError naming ``name``, its first bad value and its domain unless every entry of ``value`` is in it."""
    rule = DOMAINS[name]
    ok = torch.isfinite(value) & (torch.isin(value, torch.tensor(rule, dtype=value.dtype, device=value.device))
                                  if isinstance(rule, tuple) else _RULES[rule](value))
    if not bool(ok.all()):
        bad = value.reshape(-1)[~ok.reshape(-1)][0].item()
        allowed = (f"one of {', '.join(f'{v:g}' for v in rule)}" if isinstance(rule, tuple)
                   else "finite" if rule == "finite" else f"finite and {rule}")
        raise ValueError(f"{family} parameter {name} must be {allowed}, got {bad!r}")


# --- rendering ---------------------------------------------------------------------------------------------------
def _coords(size: int, p: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated, offset coordinates (u, v), each (n, size, size), on the parameters' device and float dtype."""
    axis = torch.arange(size, dtype=p["_dtype"], device=p["dx"].device) - (size - 1) / 2
    x = axis.view(1, 1, size) - p["dx"].view(-1, 1, 1)
    y = -axis.view(1, size, 1) - p["dy"].view(-1, 1, 1)   # y up: row 0 is the top
    theta = torch.deg2rad(p["theta"]).view(-1, 1, 1)
    c, s = torch.cos(theta), torch.sin(theta)
    return x * c + y * s, -x * s + y * c


def _gaussian(u, v, sigma, elongation):
    """Area-normalised anisotropic Gaussian and its two axis sigmas."""
    su, sv = sigma / elongation, sigma * elongation
    return torch.exp(-0.5 * (u / su) ** 2 - 0.5 * (v / sv) ** 2) / (2 * math.pi * su * sv), su, sv


def _dog_terms(p):
    """(u, v, [(weight, G, sigma_u, sigma_v)] for the centre and surround Gaussians)."""
    u, v = _coords(p["_size"], p)
    col = lambda t: t.view(-1, 1, 1)  # noqa: E731
    sigma, e = col(p["sigma"]), col(p["elongation"])
    gc, suc, svc = _gaussian(u, v, sigma, e)
    gs, sus, svs = _gaussian(u, v, sigma * col(p["ratio"]), e)
    return u, v, [(1.0, gc, suc, svc), (-col(p["surround"]), gs, sus, svs)]


def _centre(p):
    _, _, terms = _dog_terms(p)
    return sum(w * g for w, g, _, _ in terms)


def _first_derivative(p):
    # -d/du G = u / su^2 G: positive where u > 0, i.e. on the side theta points to.
    u, _, terms = _dog_terms(p)
    return sum(w * u / su**2 * g for w, g, su, _ in terms)


def _second_derivative(p):
    u, v, terms = _dog_terms(p)
    kind = p["kind"].view(-1, 1, 1)
    out = 0.0
    for w, g, su, sv in terms:
        d_uu = (u**2 / su**4 - 1 / su**2) * g
        d_vv = (v**2 / sv**4 - 1 / sv**2) * g
        d_uv = u * v / (su**2 * sv**2) * g
        out = out + w * torch.where(kind == 0, -d_uu, torch.where(kind == 1, -d_vv, d_uv))
    return p["sign"].view(-1, 1, 1) * out


def _cross(p):
    u, v = _coords(p["_size"], p)
    w, length = p["width"].view(-1, 1, 1), p["length"].view(-1, 1, 1)
    arm = lambda a, b: torch.exp(-0.5 * (a / length) ** 2 - 0.5 * (b / w) ** 2)  # noqa: E731
    centre = torch.exp(-0.5 * (u**2 + v**2) / w**2)
    return arm(u, v) + arm(v, u) + p["peak"].view(-1, 1, 1) * centre


def _square(p):
    zero = torch.zeros_like(p["dx"])
    u, v = _coords(p["_size"], {**p, "theta": zero})
    angle = torch.deg2rad(45.0 + 90.0 * p["corner"]).view(-1, 1, 1)
    reach = p["offset"].view(-1, 1, 1) * math.sqrt(2)
    cx, cy = reach * torch.cos(angle), reach * torch.sin(angle)
    half, soft = p["half"].view(-1, 1, 1), p["softness"].view(-1, 1, 1)
    box = lambda t: torch.sigmoid((half - t.abs()) / soft)  # noqa: E731
    return box(u - cx) * box(v - cy)


# family -> (parameter group, closed form, sign): shared with DoGConv2d, which trains the same forms
SPECS: dict[str, tuple[str, Callable, float]] = {
    "on_centre": ("centre", _centre, 1.0), "off_centre": ("centre", _centre, -1.0),
    "on_cross": ("cross", _cross, 1.0), "off_cross": ("cross", _cross, -1.0),
    "first_derivative": ("first_derivative", _first_derivative, 1.0),
    "second_derivative": ("second_derivative", _second_derivative, 1.0),
    "on_square": ("square", _square, 1.0), "off_square": ("square", _square, -1.0),
}
assert tuple(SPECS) == FAMILIES


# --- public API --------------------------------------------------------------------------------------------------
def as_int(value, what: str, rule: str) -> int:
    """``value`` as a Python int if it is an integer (``int``, numpy or 0-d torch integer; not bool), else
    ValueError naming ``what`` and the ``rule`` it must follow."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.is_floating_point()):
        raise ValueError(f"{what} must be {rule}, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be {rule}, got {value!r}") from None


def check_size(size) -> int:
    """Return ``size`` as int, or raise ValueError unless it is an odd integer >= 3 (no upper bound)."""
    rule = "an odd integer >= 3 (3, 5, 7, 9, ...)"
    size = as_int(size, "kernel size", rule)
    if size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size must be {rule}, got {size!r}")
    return size


def _check_family(family: str) -> str:
    if family not in SPECS:
        raise ValueError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    return family


def check_n(n) -> int:
    n = as_int(n, "n", "an integer >= 0")
    if n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    return n


_NAMED_VALUES = {"kind": SECOND_DERIVATIVE_KINDS, "corner": SQUARE_CORNERS}


def sample_params(family: str, n: int, *, generator: torch.Generator | None = None,
                  **fixed) -> dict[str, torch.Tensor]:
    """Draw ``n`` parameter sets for ``family`` from ``PARAMS``; ``fixed`` overrides any of them.

    A fixed value may be a number, a tensor of shape (n,), or for ``kind`` / ``corner`` a name
    (``"uu"``, ``"top_left"``, ...). Every parameter is drawn even when fixed, so a seed gives the same
    remaining parameters whatever is fixed.
    """
    group = PARAMS[SPECS[_check_family(family)][0]]
    check_n(n)
    unknown = sorted(set(fixed) - set(group))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for family {family!r}; allowed: {', '.join(group)}")
    params = {name: dist.draw(n, generator) for name, dist in group.items()}
    for name, value in fixed.items():
        if isinstance(value, str):
            names = _NAMED_VALUES.get(name, ())
            if value not in names:
                raise ValueError(f"unknown {name} {value!r} for family {family!r}; allowed: {', '.join(names)}")
            value = float(names.index(value))
        value = torch.as_tensor(value, dtype=torch.float32)
        if name in _NAMED_VALUES and not bool(torch.isin(value, torch.arange(len(_NAMED_VALUES[name]))).all()):
            allowed = ", ".join(f"{i} ({n})" for i, n in enumerate(_NAMED_VALUES[name]))
            raise ValueError(f"{name} must be one of {allowed}, got {value.tolist()}")
        if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != n):
            raise ValueError(f"fixed parameter {name!r} must be a scalar or shape ({n},), got {tuple(value.shape)}")
        _check_domain(family, name, value)
        params[name] = value.expand(n).clone()
    return params


def render(family: str, size: int, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Kernels (n, size, size), unit L2 norm, from explicit parameters (see ``sample_params``).

    Differentiable in the continuous parameters (``DoGConv2d`` trains through it) and computed on their device in
    their floating dtype (float32 when none is floating, e.g. all integer tensors); ``kind`` / ``sign`` /
    ``corner`` only select.
    """
    group, fn, sign = SPECS[_check_family(family)]
    size = check_size(size)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict name -> tensor (see sample_params), got {type(params).__name__}")
    missing = [name for name in PARAMS[group] if name not in params]
    if missing:
        raise ValueError(f"render({family!r}) needs parameters {', '.join(PARAMS[group])}; missing: "
                         f"{', '.join(missing)} (draw them with sample_params({family!r}, n))")
    lengths = {name: len(torch.as_tensor(params[name]).reshape(-1)) for name in PARAMS[group]}
    n = lengths[next(iter(PARAMS[group]))]
    if len(set(lengths.values())) > 1:
        raise ValueError(f"render({family!r}): parameters must all have the same length, got {lengths}")
    floats = [t.dtype for t in params.values() if torch.is_tensor(t) and t.is_floating_point()]
    dtype = functools.reduce(torch.promote_types, floats) if floats else torch.float32
    if n == 0:
        return torch.zeros(0, size, size, dtype=dtype, device=params["dx"].device)
    kernels = sign * fn({**params, "_size": size, "_dtype": dtype})
    norms = kernels.flatten(1).norm(dim=1)
    bad = ~torch.isfinite(norms) | (norms <= 1e-12)
    # No unit-norm kernel exists: name the parameters rather than return NaN / 0. Checked on the CPU only, where it
    # costs nothing; on an accelerator it would stall every DoGConv2d forward for a host round trip. Not while
    # torch.compile / torch.export trace it either: a data-dependent branch breaks the graph / fails the export.
    if norms.device.type == "cpu" and not torch.compiler.is_compiling() and bool(bad.any()):
        i = int(bad.nonzero()[0])
        for name in PARAMS[group]:
            _check_domain(family, name, torch.as_tensor(params[name]).reshape(-1)[i:i + 1].detach().float())
        values = ", ".join(f"{name}={float(torch.as_tensor(params[name]).reshape(-1)[i]):g}" for name in PARAMS[group])
        raise ValueError(f"{family} kernel {i} of size {size} is {'zero' if torch.isfinite(norms[i]) else 'not finite'}"
                         f" and has no unit-norm shape ({values}); e.g. ratio=1 with surround=1 cancels the DoG, "
                         f"an offset far outside the kernel leaves nothing on it")
    return (kernels / norms.clamp_min(1e-12).view(-1, 1, 1)).to(dtype)


def generate(family: str, n: int, size: int, *, generator: torch.Generator | None = None,
             **fixed_params) -> torch.Tensor:
    """``n`` kernels of ``family``, shape (n, size, size), float32, unit L2 norm, parameters drawn from ``PARAMS``.

    >>> generate("first_derivative", 4, 7, theta=90.0).shape  # the "up" subtype
    torch.Size([4, 7, 7])
    """
    _check_family(family)
    check_size(size)
    return render(family, size, sample_params(family, check_n(n), generator=generator, **fixed_params))

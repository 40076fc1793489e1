"""Fit the DoG families' closed forms to trained kernels: which DoG each kernel is, not only which cluster.

The paper (Babaiee et al., ICLR 2024, Sec. 4 and Appendix B) names a kernel's cluster but not its parameters.
``fit_families`` finds, for every kernel ``w`` (k x k), the family ``f``, parameters ``p`` and free gain ``g >= 0``
and offset ``o`` minimising the least-squares error ``||w - (g render_f(p) + o)||``, with ``render`` the closed
forms of ``dog_init.families`` (one definition of the formulas). With the offset free the error is that of the
centred kernels, and with the gain free (but non-negative, so on- and off-centre stay apart) its minimum is

    residual = ||w_c - g t_c|| / ||w_c|| = sqrt(1 - cos^2),   cos = <w_c, t_c> / (||w_c|| ||t_c||) > 0

(``w_c``, ``t_c``: the kernel and the rendered template minus their means; residual 1 when cos <= 0). So the fit
maximises the centred cosine similarity of Sec. 3, the quantity the classifier thresholds.

How: every non-degenerate kernel is matched (centred cosine) against the template bank (``analysis.core.labels``); the
best template of each start group (a family, or a subtype where the subtype is discrete) is a candidate, and the
``starts`` best groups within ``margin`` of the best seed one start each; the best group also seeds up to
``starts - 1`` more from its next best templates that are unlike those taken (other widths and offsets: thin kernels
have local minima on the pixel grid). All starts of a chunk of kernels are then optimised at once by Adam
(cosine-annealed learning rate) on ``sum(1 - cos)`` in the unconstrained variables of ``analysis.fit._spaces``
(parameters stay in range by sigmoid reparameterisation, not clipping): the first 15 % of ``steps`` with every
start, the rest with each kernel's best start only. The final start gives the kernel's family, subtype and
parameters. Degenerate kernels (constant or non-finite, the rule of ``analysis.core.preprocess.degenerate`` that
``KernelClassifier.classify`` uses) are marked and never fitted.

Parameters are in ``dog_init``'s convention: sigmas and offsets in pixels, ``theta`` in degrees counter-clockwise
from +x with y up (centre families modulo 180, first derivatives modulo 360, second derivatives and crosses in
(-45, 45)), ``sigma`` the centre Gaussian's sigma (the surround's is ``ratio * sigma``, weighted ``surround``).
"""
from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from tqdm.auto import tqdm

from dog_init import render
from dog_init.files import atomic_path

from ._spaces import PARAM_NAMES, SPACES, fine_name, spaces_for, start_group
from ..core.labels import families_for, template_bank
from ..core.preprocess import centre_normalise, check_kernels, degenerate, to_basis

__all__ = ["FamilyFit", "fit_families", "DEGENERATE", "PARAM_NAMES"]

DEGENERATE = "degenerate"
_CANDIDATES = 128   # templates of a kernel's best start group from which its extra, unlike starts are drawn
_JITTER = 0.02      # std of the start jitter, in the unconstrained variables
_PHASE1 = 0.15      # share of the steps that all starts take before each kernel keeps only its best


@dataclass
class FamilyFit:
    """Per kernel (N rows): fitted family and subtype, parameters, residual, gain and offset.

    ``params[name]`` is (N,) float32 for every name of ``PARAM_NAMES``, NaN where the fitted family lacks the
    parameter or the kernel is degenerate; ``kind`` / ``sign`` / ``corner`` hold the index or sign that ``fine``
    names. ``residual`` is ``||w_c - g t_c|| / ||w_c||`` in [0, 1] (NaN if degenerate).
    """
    size: int
    family: np.ndarray          # (N,) str: fitted family, or "degenerate"
    fine: np.ndarray            # (N,) str: subtype ("first_derivative/up", ...), or "degenerate"
    params: dict[str, np.ndarray]
    residual: np.ndarray        # (N,) float32
    gain: np.ndarray            # (N,) float32 >= 0: w ~ gain * render(...) + offset (render has unit L2 norm)
    offset: np.ndarray          # (N,) float32
    degenerate: np.ndarray      # (N,) bool
    families: tuple[str, ...] = field(default=())   # the families that were tried

    def __len__(self) -> int:
        return len(self.family)

    def subset(self, mask) -> "FamilyFit":
        return FamilyFit(self.size, self.family[mask], self.fine[mask], {k: v[mask] for k, v in self.params.items()},
                         self.residual[mask], self.gain[mask], self.offset[mask], self.degenerate[mask],
                         self.families)

    def to_frame(self) -> dict[str, np.ndarray]:
        """Columns (each (N,)): family, fine, residual, gain, offset, degenerate, then every parameter.
        ``pandas.DataFrame(fit.to_frame())`` makes a data frame; pandas is not needed here."""
        return {"family": self.family.astype(str), "fine": self.fine.astype(str), "residual": self.residual,
                "gain": self.gain, "offset": self.offset, "degenerate": self.degenerate, **self.params}

    def to_csv(self, path, extra: dict[str, np.ndarray] | None = None) -> None:
        """Write ``to_frame()`` (``extra`` columns first, e.g. layer names) as CSV, atomically."""
        cols = {**(extra or {}), **self.to_frame()}
        bad = [k for k, v in cols.items() if len(v) != len(self)]
        if bad:
            raise ValueError(f"extra column {bad[0]!r} has {len(cols[bad[0]])} rows, the fit {len(self)}")
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(cols))
            text = [np.char.mod("%.6g", v) if np.asarray(v).dtype.kind == "f" else np.asarray(v).astype(
                int if np.asarray(v).dtype == bool else str) for v in cols.values()]
            writer.writerows(zip(*(np.asarray(t).tolist() for t in text)))

    def summary(self) -> dict[str, dict[str, float]]:
        """Per family tried: median fitted centre sigma (NaN for crosses / squares, which have none), median
        residual and count of kernels fitted to it; degenerate kernels are left out. Pure numpy, O(N): about
        15 ms for 24,576 kernels on a busy 2-core CPU, nothing beside the fit itself (``fit_families``: ~30 s of
        CPU time for ConvMixer-768/32's 24,576 7x7 kernels at the default 200 steps, about half at ``steps=100``)."""
        out = {}
        for fam in self.families:
            m = self.family == fam
            count = int(m.sum())
            sig = self.params["sigma"][m]
            out[fam] = {"sigma_median": float(np.nanmedian(sig)) if count and np.isfinite(sig).any() else float("nan"),
                        "residual_median": float(np.median(self.residual[m])) if count else float("nan"),
                        "count": count}
        return out


# ------------------------------------------------------------------------------------------------ the fit
def fit_families(kernels, families=None, *, steps: int = 200, starts: int = 3, margin: float = 0.15,
                 lr: float = 0.1, chunk: int | None = None, threads: int | None = None,
                 generator: torch.Generator | None = None, progress: bool = False) -> FamilyFit:
    """Fit every kernel (N, k, k) (ndarray or tensor) to its best family; see the module docstring.

    families: names from ``dog_init.FAMILIES`` available at this size (default ``labels.families_for(k)``: no
        squares above 5x5, no crosses at 3x3, for which the template bank has no templates);
    steps: Adam steps per start (0: the best template alone); starts: start groups per kernel, at most, those
        whose best template is within ``margin`` of the kernel's best (centred cosine); lr: Adam's initial step in
        the unconstrained variables; chunk: kernels optimised together (default: the kernels shared out evenly
        between the workers, at most 4096; memory ~ chunk * k^2 * 4 kB); threads: workers, each fitting its own
        chunks on one core (default ``torch.get_num_threads()``);
    generator: the random jitter of the starts, drawn per kernel, so the fit does not depend on ``chunk`` or
        ``threads``; None uses seed 0, so every run gives the same fit.

    Bad input (wrong shape, even or too small size, unknown family, bad numbers) raises ValueError naming the value
    before any work; non-finite or constant kernels are marked degenerate, as ``KernelClassifier.classify`` does.
    """
    arr = check_kernels(kernels)
    n, size = len(arr), arr.shape[-1]
    families = _check_families(families, size)
    steps, starts = _check_int("steps", steps, 0), _check_int("starts", starts, 1)
    chunk = None if chunk is None else _check_int("chunk", chunk, 1)
    threads = torch.get_num_threads() if threads is None else _check_int("threads", threads, 1)
    for name, value in (("margin", margin), ("lr", lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    bad = degenerate(arr) if n else np.zeros(0, bool)
    fit = _empty(size, n, bad, families)
    good = np.flatnonzero(~bad)
    bank = _start_bank(size, families)
    jitter = _JITTER * torch.randn(len(good), 2 * starts, max(len(s.bounds) for s in SPACES.values()),
                                   generator=gen)
    chunk = chunk or min(4096, max(256, -(-len(good) // threads)))
    parts = [np.arange(lo, min(lo + chunk, len(good))) for lo in range(0, len(good), chunk)]
    workers = max(1, min(threads, len(parts)))

    def work(i: int) -> int:
        # One intra-op thread per worker: on a shared machine OpenMP threads that wait for each other at every
        # small op cost many times what they save; workers on separate chunks keep every core busy instead.
        torch.set_num_threads(1)
        rows = good[parts[i]]
        _fit_chunk(arr[rows], rows, fit, bank, jitter[parts[i]], steps=steps, starts=starts, margin=float(margin),
                   lr=float(lr))
        return len(parts[i])

    before = torch.get_num_threads()
    bar = tqdm(total=len(good), desc=f"fitting {size}x{size} kernels", unit="kernel", disable=not progress)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for done in pool.map(work, range(len(parts))):
                bar.update(done)
    finally:
        torch.set_num_threads(before)
        bar.close()
    return fit


def _check_families(families, size: int) -> tuple[str, ...]:
    allowed = families_for(size)
    if families is None:
        return allowed
    if isinstance(families, str):
        families = (families,)
    families = tuple(families)
    if not families:
        raise ValueError(f"families is empty; allowed at {size}x{size}: {', '.join(allowed)}")
    for f in families:
        if f not in allowed:
            raise ValueError(f"family {f!r} cannot be fitted to {size}x{size} kernels; allowed: {', '.join(allowed)}")
    return tuple(dict.fromkeys(families))


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _empty(size: int, n: int, bad: np.ndarray, families) -> FamilyFit:
    nan = lambda: np.full(n, np.nan, np.float32)  # noqa: E731
    family = np.where(bad, DEGENERATE, "").astype(object)
    return FamilyFit(size, family, family.copy(), {k: nan() for k in PARAM_NAMES}, nan(), nan(), nan(), bad.copy(),
                     families)


@dataclass(frozen=True)
class _Bank:
    coords: torch.Tensor                 # (T, k^2 - 1) templates, sorted by start group
    bounds: list[tuple[int, int]]        # template slice of each start group
    group_family: list[str]              # family of each start group
    params: dict[str, torch.Tensor]      # name -> (T,) rendering values (NaN where a family lacks one)


@lru_cache(maxsize=16)
def _start_bank(size: int, families: tuple[str, ...]) -> _Bank:
    bank = template_bank(size)
    keep = np.flatnonzero(np.isin(bank.names, families))
    keys = np.array([start_group(f, s) for f, s in zip(bank.names[keep], bank.fine[keep])])
    order = keep[np.argsort(keys, kind="stable")]
    keys = np.sort(keys, kind="stable")
    groups, first = np.unique(keys, return_index=True)
    ends = np.r_[first[1:], len(keys)]
    return _Bank(torch.from_numpy(np.ascontiguousarray(bank.coords[order])), list(zip(first.tolist(), ends.tolist())),
                 [str(bank.names[order[a]]) for a in first],
                 {k: torch.from_numpy(np.ascontiguousarray(v[order])) for k, v in bank.params.items()})


def _seed_starts(coords: torch.Tensor, bank: _Bank, starts: int, margin: float, alike: float = 0.8):
    """(kernel row, template index, start group) of each start: the best template of each of the kernel's
    ``starts`` best start groups within ``margin`` of the best, plus, in its best group, the next best templates
    that are not ``alike`` (centred cosine) any start already chosen, up to ``starts`` in that group: other widths
    and offsets of the likeliest shape, because thin kernels have local minima on the pixel grid."""
    rows, tmpls, groups = [], [], []
    for a in range(0, len(coords), 512):          # (512 x T) similarities at a time: ~40 MB at 7x7
        sims = coords[a:a + 512] @ bank.coords.T
        per = [sims[:, lo:hi].max(dim=1) for lo, hi in bank.bounds]
        val = torch.stack([v.values for v in per], 1)                           # (b, G)
        top_val, top_group = val.topk(min(starts, val.shape[1]), dim=1)
        use = top_val >= top_val[:, :1] - margin
        b = torch.arange(len(val)).view(-1, 1).expand_as(top_group)
        best = torch.stack([v.indices + lo for v, (lo, _) in zip(per, bank.bounds)], 1)     # (b, G)
        rows.append(b[use] + a)
        groups.append(top_group[use])
        tmpls.append(best[b[use], top_group[use]])
        first = top_group[:, 0]
        pool = torch.full((len(val), _CANDIDATES), -1, dtype=torch.int64)     # best group's best templates
        for g in first.unique().tolist():
            lo, hi = bank.bounds[g]
            sel = torch.nonzero(first == g)[:, 0]
            best_g = sims[sel, lo:hi].topk(min(_CANDIDATES, hi - lo), dim=1).indices + lo
            pool[sel, :best_g.shape[1]] = best_g
        vec = bank.coords[pool.clamp_min(0)] * (pool >= 0).unsqueeze(2)       # padding: zero, never taken
        taken = _diverse(vec, starts, alike) & (pool >= 0)
        taken[:, 0] = False                                                      # already a start
        rows.append(b[:, :1].expand_as(pool)[taken] + a)
        groups.append(first.view(-1, 1).expand_as(pool)[taken])
        tmpls.append(pool[taken])
    return torch.cat(rows), torch.cat(tmpls), torch.cat(groups)


def _diverse(vec: torch.Tensor, most: int, alike: float) -> torch.Tensor:
    """(s, C) bool: greedily, in order, the candidates (s, C, d) whose cosine with every one taken before is at
    most ``alike``, ``most`` per row; the first is always taken."""
    s, n_cand, _ = vec.shape
    taken = torch.zeros(s, n_cand, dtype=torch.bool)
    kept = torch.zeros(s, most, vec.shape[2])
    count = torch.zeros(s, dtype=torch.int64)
    slots = torch.arange(most)
    for c in range(n_cand):
        like = ((kept @ vec[:, c, :, None])[..., 0] > alike) & (slots < count[:, None])
        take = ~like.any(dim=1) & (count < most) & vec[:, c].any(dim=1)
        taken[:, c] = take
        kept[take, count[take]] = vec[take, c]
        count += take
    return taken


def _fit_chunk(raw: np.ndarray, rows: np.ndarray, fit: FamilyFit, bank: _Bank, jitter: torch.Tensor, *, steps,
               starts, margin, lr):
    size = raw.shape[-1]
    target = torch.from_numpy(centre_normalise(raw))                       # (B, k^2) centred, unit norm
    row, tmpl, group = _seed_starts(torch.from_numpy(to_basis(raw)), bank, starts, margin)
    fams = np.array(bank.group_family)[group.numpy()]
    # The j-th start of a kernel takes the kernel's j-th row of jitter, whatever chunk it is fitted in.
    order = np.argsort(row.numpy(), kind="stable")
    nth = np.empty(len(row), np.int64)
    nth[order] = np.arange(len(row)) - np.searchsorted(row.numpy()[order], row.numpy()[order])
    jobs = []
    for fam in dict.fromkeys(fams.tolist()):
        sel = torch.from_numpy(np.flatnonzero(fams == fam))
        space = spaces_for(size)[fam]
        values = {k: bank.params[k][tmpl[sel]] for k in (*space.names, *space.discrete)}
        z = space.to_free(values)
        z = z + jitter[row[sel], torch.from_numpy(nth[sel.numpy()]), :z.shape[1]]   # off exact grid symmetries
        jobs.append(_Job(space, z, {k: values[k] for k in space.discrete}, row[sel]))
    # All starts for the first 15 % of the steps, then only each kernel's best: by then the starts that will lose
    # have lost (the family decision rarely changes later), and the rest is refinement of one start per kernel.
    prune = int(steps * _PHASE1)
    _adam(jobs, target, size, range(prune), steps, lr)
    jobs = _best_per_row(jobs, target, size)
    _adam(jobs, target, size, range(prune, steps), steps, lr)

    flat = raw.reshape(len(raw), -1).astype(np.float64)
    norm_c = np.linalg.norm(flat - flat.mean(1, keepdims=True), axis=1)
    for job in jobs:
        with torch.no_grad():
            cos, t_mean, t_norm = _cosine(job, target, size, full=True)
        r = job.rows.numpy()
        dest = rows[r]
        values = {k: v.numpy() for k, v in job.space.from_free(job.z.detach()).items()}
        values = job.space.wrap({**values, **{k: v.numpy() for k, v in job.fixed.items()}})
        for k, v in values.items():
            fit.params[k][dest] = v
        c = np.clip(cos.numpy().astype(np.float64), 0.0, 1.0)
        fit.family[dest] = job.space.family
        fit.fine[dest] = fine_name(job.space.family, values)
        fit.residual[dest] = np.sqrt(1 - c ** 2)
        gain = c * norm_c[r] / t_norm.numpy()                  # g = <w_c, t_c> / ||t_c||^2 >= 0
        fit.gain[dest] = gain
        fit.offset[dest] = flat[r].mean(1) - gain * t_mean.numpy()


@dataclass
class _Job:
    """Starts of one family: their free variables (M, P), fixed discrete values and kernel rows (M,)."""
    space: object
    z: torch.Tensor
    fixed: dict
    rows: torch.Tensor

    def subset(self, index) -> "_Job":
        return _Job(self.space, self.z.detach()[index].clone(), {k: v[index] for k, v in self.fixed.items()},
                    self.rows[index])


def _adam(jobs: list[_Job], target, size: int, steps: range, total: int, lr: float) -> None:
    """Adam on sum(1 - cos) over ``steps`` of a cosine-annealed schedule of ``total`` steps (lr -> lr / 100)."""
    if not len(steps):
        return
    zs = [job.z.requires_grad_() for job in jobs]
    opt = torch.optim.Adam(zs, lr=lr)
    for t in steps:
        for g in opt.param_groups:
            g["lr"] = lr / 100 + (lr - lr / 100) * (1 + np.cos(np.pi * t / total)) / 2
        opt.zero_grad(set_to_none=True)
        loss = sum((1 - _cosine(job, target, size)).sum() for job in jobs)
        loss.backward()
        opt.step()
    for job in jobs:
        job.z = job.z.detach()


def _best_per_row(jobs: list[_Job], target, size: int) -> list[_Job]:
    """Keep each kernel's start of highest cosine (lowest residual)."""
    with torch.no_grad():
        cos = torch.cat([_cosine(job, target, size) for job in jobs]).numpy()
    start_row = torch.cat([job.rows for job in jobs]).numpy()
    order = np.lexsort((-cos, start_row))
    best = order[np.r_[True, start_row[order][1:] != start_row[order][:-1]]]
    out, offset = [], 0
    for job in jobs:
        local = best[(best >= offset) & (best < offset + len(job.rows))] - offset
        offset += len(job.rows)
        if len(local):
            out.append(job.subset(torch.from_numpy(local)))
    return out


def _cosine(job: _Job, target, size: int, full: bool = False):
    """Centred cosine of each start's rendered template with its kernel's centred unit ``target`` row (k^2,);
    with ``full``, also the templates' means and centred norms (for gain and offset)."""
    t = render(job.space.family, size, {**job.space.from_free(job.z), **job.fixed}).flatten(1)
    mean = t.mean(dim=1, keepdim=True)
    tc = t - mean
    norm = tc.norm(dim=1).clamp_min(1e-12)
    cos = (tc * target[job.rows]).sum(dim=1) / norm
    return (cos, mean[:, 0], norm) if full else cos

"""Collect the trained depthwise kernels of a model (or of saved kernel arrays) for the cluster analysis.

A depthwise convolution filters each input channel with its own k x k kernel: an ``nn.Conv2d`` with
``groups == in_channels > 1`` and weight shape ``(m * C, 1, k, k)`` (channel multiplier ``m``, usually 1), so
it holds ``out_channels`` separate 2-D kernels. Babaiee et al. (ICLR 2024, Sec. 3) extract every such kernel of
a trained network, group them by size k (3, 5, 7, ...) and cluster each size separately; the eligibility rule
(square odd k >= 3; stems, pointwise, grouped, 1x1 and band kernels excluded) is ``dog_init.depthwise_reason``.

Kernels are the raw weights, float32, in the model's weight units (no normalisation here; see
``analysis.core.preprocess``). A kernel that is constant (a pruned all-zero channel) or holds a NaN/inf is *degenerate*:
it is kept so counts match the model, marked in ``KernelGroup.degenerate``, never clustered, reported separately.

>>> ks = extract_depthwise("timm:convnext_tiny.fb_in1k", checkpoint="convnext_tiny.safetensors")
>>> ks.sizes, ks[7].kernels.shape            # ([7], (N, 7, 7))
"""
from __future__ import annotations

import difflib
import glob as _glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from torch import nn


from ..core.preprocess import degenerate
from .sources import (ALLOWED_EXTENSIONS, WEIGHT_EXTENSIONS, Layers, check_array, check_ranges, file_state_layers,
                      module_excluded, module_layers, npy_layers, npz_layers, read_state_dict, timm_model)

__all__ = ["KernelGroup", "KernelSet", "extract_depthwise", "load_kernel_files", "nonfinite_warning",
           "read_state_dict", "ALLOWED_EXTENSIONS"]  # the last two from .sources

_ALLOWED = (f"allowed sources: a file ending in {' '.join(ALLOWED_EXTENSIONS)}, an nn.Module, "
            "'timm:NAME', a KernelSet, or a list of these")
Source = Union[str, os.PathLike, nn.Module, "KernelSet", Sequence]


@dataclass
class KernelGroup:
    """All kernels of one size k. Row i is ``kernels[i]``, from layer ``layer_names[layer_index[i]]``."""
    size: int
    kernels: np.ndarray             # (N, k, k) float32, raw weights
    layer_index: np.ndarray         # (N,) int64 index into layer_names
    layer_names: list[str]          # layers of this size, in source order
    degenerate: np.ndarray = None   # (N,) bool: constant (all-zero included) or non-finite; computed if not given

    def __post_init__(self):
        self.kernels = np.ascontiguousarray(self.kernels, dtype=np.float32)
        self.layer_index = np.asarray(self.layer_index, dtype=np.int64)
        n, k = len(self.kernels), self.size
        if self.kernels.shape != (n, k, k) or self.layer_index.shape != (n,) or (
                n and not 0 <= self.layer_index.min() <= self.layer_index.max() < len(self.layer_names)):
            raise ValueError(f"KernelGroup({k}): kernels {self.kernels.shape}, layer_index {self.layer_index.shape}"
                             f" and {len(self.layer_names)} layer names do not fit together")
        if self.degenerate is None:
            self.degenerate = degenerate(self.kernels) if n else np.zeros(0, dtype=bool)
        self.degenerate = np.asarray(self.degenerate, dtype=bool)

    def __len__(self) -> int:
        return len(self.kernels)

    @property
    def valid(self) -> np.ndarray:
        """The non-degenerate kernels (M, k, k): what gets clustered."""
        return self.kernels[~self.degenerate]

    @property
    def n_degenerate(self) -> int:
        return int(self.degenerate.sum())

    def layer(self, name: str) -> np.ndarray:
        """The kernels (n, k, k) of one layer."""
        if name not in self.layer_names:
            raise KeyError(f"no {self.size}x{self.size} layer {name!r}; layers: {self.layer_names[:5]}...")
        return self.kernels[self.layer_index == self.layer_names.index(name)]

    def layer_counts(self) -> dict[str, int]:
        counts = np.bincount(self.layer_index, minlength=len(self.layer_names))
        return {name: int(c) for name, c in zip(self.layer_names, counts)}


@dataclass
class KernelSet:
    """Depthwise kernels grouped by size: ``ks.sizes`` -> [3, 5, ...]; ``ks[k]`` / ``ks.get(k)`` -> KernelGroup."""
    groups: dict[int, KernelGroup] = field(default_factory=dict)
    source: str = ""
    order: list[str] = field(default_factory=list)   # layer names in source (model) order, across sizes
    excluded: dict[int, int] = field(default_factory=dict)   # {k: kernels} of a model's even / 1x1 depthwise convs

    @property
    def layer_order(self) -> list[str]:
        """Layer names in source order across sizes (by size, then source order, where it was not recorded)."""
        return self.order or [name for g in self for name in g.layer_names]

    @property
    def sizes(self) -> list[int]:
        return sorted(self.groups)

    def get(self, k: int, default=None) -> KernelGroup | None:
        return self.groups.get(k, default)

    def __getitem__(self, k: int) -> KernelGroup:
        if k not in self.groups:
            raise KeyError(f"no {k}x{k} kernels in {self.source}; sizes: {self.sizes}")
        return self.groups[k]

    def __iter__(self):
        return (self.groups[k] for k in self.sizes)

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())

    @property
    def n_degenerate(self) -> int:
        return sum(g.n_degenerate for g in self.groups.values())

    def nonfinite_by_layer(self) -> dict[str, int]:
        """{layer: number of its kernels holding a NaN or inf}, only layers with any, in source order. Such kernels
        are degenerate (never clustered); a layer full of them usually means a diverged or corrupted checkpoint."""
        counts: dict[str, int] = {}
        for g in self:
            bad = ~np.isfinite(g.kernels).all(axis=(1, 2))
            for i, c in enumerate(np.bincount(g.layer_index[bad], minlength=len(g.layer_names))):
                if c:
                    counts[g.layer_names[i]] = counts.get(g.layer_names[i], 0) + int(c)
        order = {name: i for i, name in enumerate(self.layer_order)}
        return dict(sorted(counts.items(), key=lambda item: order.get(item[0], len(order))))

    def layers(self) -> list[tuple[str, np.ndarray]]:
        """(layer name, kernels (n, k, k)) per layer, by size then source order."""
        return [(name, g.layer(name)) for g in self for name in g.layer_names]

    def summary(self) -> str:
        rows = [f"{self.source}: {len(self)} depthwise kernels, "
                f"{sum(len(g.layer_names) for g in self)} layers, {self.n_degenerate} degenerate",
                f"{'size':>6}  {'kernels':>8}  {'layers':>6}  {'degenerate':>10}"]
        rows += [f"{f'{g.size}x{g.size}':>6}  {len(g):>8}  {len(g.layer_names):>6}  {g.n_degenerate:>10}"
                 for g in self]
        return "\n".join(rows)

    def __repr__(self) -> str:
        degenerate = {g.size: f" ({g.n_degenerate} degenerate)" if g.n_degenerate else "" for g in self}
        return f"KernelSet({self.source!r}, " + ", ".join(f"{k}x{k}: {len(self[k])}{degenerate[k]}"
                                                          for k in self.sizes) + ")"

    @classmethod
    def from_array(cls, arr, name: str = "array", layers: Sequence[tuple[str, int, int]] | None = None):
        """One size from an array (N, k, k); ``layers`` = [(name, start, stop), ...] covering the rows exactly
        once (as in ``<file>.layers.json``); without it all rows are one layer called ``name``."""
        arr = check_array(arr, name)
        ranges = [(name, 0, len(arr))] if layers is None else check_ranges(layers, len(arr), name)
        return _build([(layer, arr[a:b]) for layer, a, b in ranges], name)

    def save(self, prefix) -> list[Path]:
        """Write ``<prefix>_k<k>.npy`` plus ``<prefix>_k<k>.layers.json`` per size (the format of the shared
        kernel data, readable by ``extract_depthwise``); returns the .npy paths."""
        written = []
        for g in self:
            path = Path(f"{prefix}_k{g.size}.npy")
            np.save(path, g.kernels)
            cuts = np.flatnonzero(np.diff(g.layer_index)) + 1
            starts, stops = np.r_[0, cuts], np.r_[cuts, len(g)]
            runs = [{"layer": g.layer_names[g.layer_index[a]], "start": int(a), "stop": int(b)}
                    for a, b in zip(starts, stops) if b > a]
            path.with_suffix(".layers.json").write_text(json.dumps(runs, indent=0))
            written.append(path)
        return written


def extract_depthwise(source: Source, *, checkpoint=None) -> KernelSet:
    """Every depthwise kernel of ``source``, float32, grouped by size.

    source: an ``nn.Module`` (its convs that pass ``dog_init.depthwise_reason``, named as in named_modules);
        ``"timm:NAME"`` (``timm.create_model(NAME, pretrained=checkpoint is None)``; with ``checkpoint=FILE`` the
        weights come from FILE instead, so this works offline); a state-dict file ``.pt/.pth/.bin/.safetensors``
        (depthwise = 4-D ``*.weight`` tensors of shape (C>1, 1, k, k), k >= 3 odd; a conv with a single input
        channel has the same shape and cannot be told apart); a kernel array ``.npy`` (N, k, k), with layer
        names/rows from a sibling ``<name>.layers.json`` if present, else one layer named after the file;
        ``.npz`` (each array (N, k, k) a layer named by its key); a ``KernelSet``; or a list/tuple of these,
        concatenated. If the same layer name occurs in two listed sources, every name gets its source's label
        as prefix, ``"<label>/<layer>"`` (label: file stem, ``timm:NAME``, class name or KernelSet.source).
    checkpoint: only with a single ``"timm:NAME"`` source: a state-dict file to load. Checkpoints that wrap the
        state dict under ``state_dict``/``model``/``model_ema``/``state_dict_ema`` and ``module.`` prefixes are
        handled; every depthwise weight of the model must be in it with the right shape.

    Raises FileNotFoundError (missing path), ValueError (bad extension, unknown timm name, bad array, corrupt file,
    no depthwise kernels), TypeError (other source types), RuntimeError (pretrained weights not obtainable).
    All sources are checked before any is loaded.
    """
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise ValueError(f"empty source list; {_ALLOWED}")
    if checkpoint is not None:
        if len(items) != 1 or not (isinstance(items[0], str) and items[0].startswith("timm:")):
            raise ValueError(f"checkpoint= needs a single 'timm:NAME' source to load it into, got {source!r}; "
                             "to read a state-dict file directly pass it as the source")
        _check_path(checkpoint, WEIGHT_EXTENSIONS, "checkpoint")
    for item in items:
        _check_source(item)
    loaded, excluded = zip(*(_load(item, checkpoint) for item in items))
    left_out: dict[int, int] = {}
    for part in excluded:
        for k, n in part.items():
            left_out[k] = left_out.get(k, 0) + n
    if len(loaded) == 1:
        return _build(loaded[0], _label(items[0], checkpoint, full=True), left_out)
    labels = [_label(item) for item in items]
    if len(set(labels)) < len(labels):
        labels = [f"{label}#{i}" for i, label in enumerate(labels)]
    names = [name for layers in loaded for name, _ in layers]
    if len(set(names)) < len(names):
        loaded = [[(f"{label}/{n}", a) for n, a in layers] for label, layers in zip(labels, loaded)]
    return _build([layer for layers in loaded for layer in layers], " + ".join(labels), left_out)


def nonfinite_warning(ks: KernelSet, max_layers: int = 6) -> str | None:
    """One line naming ``ks.source``, how many kernels hold NaN/inf and in which layers (the first ``max_layers``),
    or None if every kernel is finite. Such kernels are counted as degenerate, so a report on a diverged checkpoint
    would otherwise look like a merely sparse one."""
    counts = ks.nonfinite_by_layer()
    if not counts:
        return None
    named = ", ".join(f"{name} ({n})" for name, n in list(counts.items())[:max_layers])
    more = f", +{len(counts) - max_layers} more" if len(counts) > max_layers else ""
    return (f"warning: {ks.source}: {sum(counts.values())} depthwise kernels hold NaN/inf values (layers {named}"
            f"{more}); they are counted as degenerate")


def load_kernel_files(paths) -> KernelSet:
    """``extract_depthwise`` over files: one path, a glob pattern (``"data/kernels/effnet-lite0_k*.npy"``) or an
    iterable of paths/patterns, in sorted order per pattern."""
    files = []
    for pattern in map(os.fspath, [paths] if isinstance(paths, (str, os.PathLike)) else paths):
        matched = sorted(_glob.glob(pattern)) if _glob.has_magic(pattern) else [pattern]
        if not matched:
            raise FileNotFoundError(f"no files match {pattern!r}")
        files += matched
    return extract_depthwise(files)


# ---------------------------------------------------------------- checks (no loading)

def _check_path(path, allowed: tuple[str, ...], what: str = "source") -> Path:
    p = Path(path)
    if not p.exists():
        from .timm_models import timm  # timm, with the CIFAR ConvMixers registered
        hint = isinstance(path, str) and not p.suffix and timm.is_model(path.split(".")[0])
        raise FileNotFoundError(f"{what} {os.fspath(path)!r} does not exist"
                                + (f"; did you mean 'timm:{path}'?" if hint else ""))
    if p.is_dir():
        raise ValueError(f"{what} {os.fspath(path)!r} is a directory; pass files (e.g. load_kernel_files('DIR/*.npy'))")
    if p.suffix.lower() not in allowed:
        raise ValueError(f"{what} {os.fspath(path)!r} has unknown extension {p.suffix!r}; "
                         + ("allowed: " + " ".join(allowed) if what == "checkpoint" else _ALLOWED))
    return p


def _check_timm_name(name: str) -> None:
    from .timm_models import timm  # timm, with the CIFAR ConvMixers registered
    base, _, tag = name.partition(".")
    if not base:
        raise ValueError(f"empty timm model name in 'timm:{name}'; e.g. 'timm:convnext_tiny.fb_in1k'")
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
        close += [m for m in timm.list_models(f"*{base}*") if m not in close][:max(0, 8 - len(close))]
        raise ValueError(f"unknown timm model {base!r}" + (f"; close names: {', '.join(close)}" if close else
                         "; see timm.list_models('*PATTERN*')"))
    if tag and name not in timm.list_pretrained(name):
        tags = timm.list_pretrained(f"{base}.*")
        raise ValueError(f"unknown pretrained tag {tag!r} for timm model {base!r}; "
                         f"available: {', '.join(tags) if tags else 'none'}")


def _check_source(item) -> None:
    if isinstance(item, (nn.Module, KernelSet)):
        return
    if isinstance(item, str) and item.startswith("timm:"):
        return _check_timm_name(item[len("timm:"):])
    if isinstance(item, (str, os.PathLike)):
        _check_path(item, ALLOWED_EXTENSIONS)
        return
    raise TypeError(f"cannot extract kernels from {type(item).__name__} {item!r:.80}; {_ALLOWED}")


# ---------------------------------------------------------------- loading

def _label(item, checkpoint=None, full: bool = False) -> str:
    """Class name, KernelSet.source, 'timm:NAME' (+ checkpoint), or the file's stem (full: its path)."""
    if isinstance(item, (nn.Module, KernelSet)):
        return type(item).__name__ if isinstance(item, nn.Module) else item.source
    if isinstance(item, str) and item.startswith("timm:"):
        return item + (f" (checkpoint {os.fspath(checkpoint)})" if checkpoint is not None else "")
    return os.fspath(item) if full else Path(item).stem


def _load(item, checkpoint) -> tuple[Layers, dict[int, int]]:
    """The depthwise layers of ``item`` and {k: kernels} of the ones left out for their size (modules only)."""
    excluded = {}
    if isinstance(item, KernelSet):
        layers, excluded = item.layers(), item.excluded
    elif isinstance(item, (nn.Module, str)) and (isinstance(item, nn.Module) or item.startswith("timm:")):
        model = item if isinstance(item, nn.Module) else timm_model(item[len("timm:"):], checkpoint)
        layers, excluded = module_layers(model), module_excluded(model)
    else:
        path = Path(item)
        layers = {".npy": npy_layers, ".npz": npz_layers}.get(path.suffix.lower(), file_state_layers)(path)
    if not layers:
        raise ValueError(f"{_label(item, checkpoint, full=True)} has no depthwise kernels (conv weights "
                         "(C>1, 1, k, k), k >= 3 odd, groups == in_channels)")
    return layers, excluded


def _build(layers: Layers, source: str, excluded: dict[int, int] | None = None) -> KernelSet:
    by_size: dict[int, list] = {}
    for name, arr in layers:
        by_size.setdefault(int(arr.shape[-1]), []).append((name, arr))
    groups = {}
    for k, items in sorted(by_size.items()):
        names = list(dict.fromkeys(name for name, _ in items))
        index = np.concatenate([np.full(len(arr), names.index(name), np.int64) for name, arr in items])
        groups[k] = KernelGroup(k, np.concatenate([a for _, a in items]).astype(np.float32, copy=False), index, names)
    return KernelSet(groups, source, list(dict.fromkeys(name for name, _ in layers)), dict(excluded or {}))

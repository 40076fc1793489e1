"""Reading depthwise kernels out of their containers: modules, state-dict files (.pt .pth .bin .safetensors),
kernel arrays (.npy with an optional ``.layers.json``, .npz) and timm models with a checkpoint. Each reader returns
``[(layer name, float32 array (n, k, k))]`` in source order; ``kernels.extract_depthwise`` groups them by size.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dog_init import find_depthwise

from ..core.preprocess import check_dtype

__all__ = ["ARRAY_EXTENSIONS", "WEIGHT_EXTENSIONS", "ALLOWED_EXTENSIONS", "WRAPPER_KEYS", "Layers", "check_array",
           "check_ranges", "module_layers", "file_state_layers", "read_state_dict", "npy_layers", "npz_layers",
           "timm_model", "size_excluded", "module_excluded"]

ARRAY_EXTENSIONS = (".npy", ".npz")
WEIGHT_EXTENSIONS = (".pt", ".pth", ".bin", ".safetensors")
ALLOWED_EXTENSIONS = ARRAY_EXTENSIONS + WEIGHT_EXTENSIONS
WRAPPER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema")   # tried in this order
_STRIP_PREFIXES = ("module.", "_orig_mod.")                           # DDP / torch.compile wrappers
Layers = list  # [(layer name, float32 array (n, k, k))], in source order


def check_array(arr, name: str) -> np.ndarray:
    arr = check_dtype(np.asarray(arr), f"{name}: kernels")   # the same rule as classify()'s
    if arr.ndim != 3:
        raise ValueError(f"{name}: kernel array has shape {arr.shape}; need 3-D (N, k, k) "
                         "(reshape conv weights (C, 1, k, k) to (C, k, k))")
    n, kh, kw = arr.shape
    if kh != kw or kh < 3 or kh % 2 == 0:
        raise ValueError(f"{name}: kernels are {kh}x{kw}; need square, odd size >= 3 (3x3, 5x5, 7x7, ...)")
    if n == 0:
        raise ValueError(f"{name}: kernel array is empty (shape {arr.shape}); no depthwise kernels")
    return arr.astype(np.float32, copy=False)


def check_ranges(layers, n: int, name: str) -> list[tuple[str, int, int]]:
    try:
        ranges = sorted((int(a), int(b), str(layer)) for layer, a, b in layers)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: layer ranges must be (name, start, stop) triples: {err}") from None
    expected = 0
    for a, b, layer in ranges:
        if a != expected or b <= a:
            raise ValueError(f"{name}: layer ranges must cover rows 0..{n} once, in order; layer {layer!r} is "
                             f"[{a}, {b}) but the next row is {expected}")
        expected = b
    if expected != n:
        raise ValueError(f"{name}: layer ranges end at row {expected} but the array has {n} rows")
    return [(layer, a, b) for a, b, layer in ranges]


def module_layers(model: nn.Module) -> Layers:
    convs = find_depthwise(model)[0]
    meta = [name for name, conv in convs if conv.weight.is_meta]
    if meta:
        raise ValueError(f"{type(model).__name__}: depthwise weights on the meta device hold no values ({len(meta)} "
                         f"layers, e.g. {meta[0]!r}); materialise and load the model first (model.to_empty(device="
                         "'cpu'), then load_state_dict)")
    return [(name, conv.weight.detach().to("cpu", torch.float32).numpy().reshape(-1, *conv.kernel_size).copy())
            for name, conv in convs]


def size_excluded(shapes) -> dict[int, int]:
    """{k: kernels} of the depthwise weights (C>1, 1, k, k) in ``shapes`` left out for their size (k even or < 3):
    what a census reports as skipped sizes."""
    out: dict[int, int] = {}
    for c, cin, kh, kw in shapes:
        if cin == 1 and c > 1 and kh == kw and (kh < 3 or kh % 2 == 0):
            out[int(kh)] = out.get(int(kh), 0) + int(c)
    return dict(sorted(out.items()))


def module_excluded(model: nn.Module) -> dict[int, int]:
    """``size_excluded`` of a module's depthwise convs (groups == in_channels)."""
    return size_excluded(tuple(m.weight.shape) for m in model.modules()
                         if isinstance(m, nn.Conv2d) and m.groups == m.in_channels and m.weight.ndim == 4)


def file_state_layers(path: Path) -> Layers:
    layers = []
    for key, t in read_state_dict(path).items():
        if not (isinstance(t, torch.Tensor) and (key.endswith(".weight") or key == "weight") and t.ndim == 4):
            continue
        c, cin, kh, kw = t.shape
        if cin == 1 and c > 1 and kh == kw >= 3 and kh % 2 == 1 and t.is_floating_point():
            layers.append((key[:-len(".weight")] or key,
                           t.detach().to("cpu", torch.float32).numpy().reshape(c, kh, kw).copy()))
    return layers


def read_state_dict(path: Path) -> dict:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read {os.fspath(path)!r} as a {path.suffix} state dict (corrupt, truncated, or "
                         f"holds objects torch.load(weights_only=True) refuses): {type(err).__name__}: "
                         f"{str(err)[:300]}") from err
    for _ in range(3):   # unwrap {"model": {...}} style checkpoints
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), obj)
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{os.fspath(path)!r} holds no state dict of tensors (top level: {keys}); expected "
                         f"name -> tensor, possibly under one of {', '.join(WRAPPER_KEYS)}")
    return {_strip(key): value for key, value in obj.items()}


def _strip(key: str) -> str:
    while key.startswith(_STRIP_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _np_load(path: Path):
    try:
        data = np.load(path, allow_pickle=False)   # an ndarray for .npy, a lazy NpzFile for .npz
        if path.suffix.lower() != ".npz":
            return data
        with data:
            return {key: data[key] for key in data.files}
    except Exception as err:
        raise ValueError(f"cannot read {os.fspath(path)!r} as a {path.suffix} file (corrupt or truncated?): "
                         f"{type(err).__name__}: {err}") from err


def npy_layers(path: Path) -> Layers:
    arr = check_array(_np_load(path), os.fspath(path))
    sidecar = path.with_suffix(".layers.json")
    if not sidecar.exists():
        return [(path.stem, arr)]
    try:
        ranges = [(r["layer"], r["start"], r["stop"]) for r in json.loads(sidecar.read_text())]
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{os.fspath(sidecar)!r}: expected a JSON list of {{'layer', 'start', 'stop'}}: "
                         f"{type(err).__name__}: {err}") from err
    return [(name, arr[a:b]) for name, a, b in check_ranges(ranges, len(arr), os.fspath(sidecar))]


def npz_layers(path: Path) -> Layers:
    return [(key, check_array(arr, f"{os.fspath(path)}[{key!r}]")) for key, arr in _np_load(path).items()]


def _recorded_kwargs(path: Path, name: str) -> dict:
    """The ``timm.create_model`` arguments a ``python -m train`` run recorded in its safetensors header (e.g.
    ``{"kernel_size": 7, "patch_size": 2}``), when the file was written for model ``name``; else none."""
    if path.suffix.lower() != ".safetensors":
        return {}
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") == "dog-init-train" and meta.get("timm_model") == name.partition(".")[0]:
            return dict(json.loads(meta.get("model_kwargs", "{}")))
    except (OSError, ValueError, TypeError):   # unreadable headers are reported by read_state_dict's load
        pass
    return {}


def timm_model(name: str, checkpoint) -> nn.Module:
    from .timm_models import timm  # timm, with the CIFAR ConvMixers registered
    if checkpoint is None:
        try:
            return timm.create_model(name, pretrained=True)
        except Exception as err:
            raise RuntimeError(
                f"could not get pretrained weights for timm model {name!r} ({type(err).__name__}: "
                f"{str(err)[:300]}); offline or no published weights? pass a weights file: "
                f"extract_depthwise('timm:{name}', checkpoint=FILE) (CLI: --checkpoint FILE), or the file "
                "itself as the source") from err
    state = read_state_dict(Path(checkpoint))
    from .timm_models import create_model
    model = create_model(name, pretrained=False, **_recorded_kwargs(Path(checkpoint), name))
    own = model.state_dict()
    eligible, _ = find_depthwise(model)
    bad = [f"{n}.weight" + ("" if f"{n}.weight" not in state else f" {tuple(state[f'{n}.weight'].shape)} != "
                            f"{tuple(c.weight.shape)}")
           for n, c in eligible if f"{n}.weight" not in state or state[f"{n}.weight"].shape != c.weight.shape]
    if bad:
        raise ValueError(f"checkpoint {os.fspath(checkpoint)!r} does not fit timm model {name!r}: {len(bad)} of "
                         f"{len(eligible)} depthwise weights missing or mis-shaped, e.g. {bad[:3]}; checkpoint "
                         f"keys start {list(state)[:4]}. To read its depthwise weights by shape alone, pass the "
                         "file as the source")
    model.load_state_dict({k: v for k, v in state.items() if k in own and v.shape == own[k].shape}, strict=False)
    return model

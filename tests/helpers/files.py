"""What a folder holds, strict JSON, and small depthwise state dicts written for the analysis tests."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def listing(folder: Path) -> list[str]:
    """Every path under ``folder``, relative and sorted (hidden temporary files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def strict_json(path: Path):
    """``path`` parsed as JSON, refusing the bare NaN / Infinity that Python's json writes by default."""
    def refuse(constant):
        raise ValueError(f"bare {constant} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)


def depthwise_file(path: Path, layers: int, channels: int, nan: dict[int, int] | None = None) -> Path:
    """A state dict of ``layers`` 5x5 depthwise weights ``blocks.<i>.dw.weight`` (channels, 1, 5, 5), random; in
    layer i the first ``nan[i]`` kernels get a NaN (odd i: an inf instead)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    state = {f"blocks.{i}.dw.weight": torch.randn(channels, 1, 5, 5, generator=g) for i in range(layers)}
    for i, n in (nan or {}).items():
        state[f"blocks.{i}.dw.weight"][:n, 0, 2, 2] = float("inf") if i % 2 else float("nan")
    save_file(state, str(path))
    return path

"""Per-layer family mixes measured on a trained model ("profiles"), to initialise another model layer by layer.

The paper's Fig. 7 / 11 show that the cluster shares change with depth (Babaiee et al., ICLR 2024, Sec. 5): early
layers hold more on/off-centre kernels, late ones more unclustered and derivative kernels. ``python -m analysis
profile`` measures, for every depthwise layer of a trained model, the shares of the families among its *clustered*
kernels (renormalised to 1) and writes them as JSON; ``load_profile`` reads it, and ``dog_init_(model,
mix=profile)`` draws each layer's families from the profile's layer at the same relative depth.

Matching (``Profile.mix_for``): target layer i of N sits at relative depth ``i / (N - 1)`` (0.5 for a single
layer); it takes the profiled layer of the same kernel size whose relative depth (over all profiled layers) is
nearest, and, where the profile has no layer of that size, the layer of the nearest size. A profiled layer without
clustered kernels has no mix; the nearest layer that has one is taken instead.

JSON format (``format: dog-init-profile``, ``version: 1``)::

    {"format": "dog-init-profile", "version": 1, "source": "timm:convnext_tiny.fb_in1k",
     "overall": {family: share}, "layers": [{"name", "kernel_size", "depth", "kernels", "clustered",
     "mix": {family: share}}]}
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from .mixes import resolve_mix

__all__ = ["LayerProfile", "Profile", "load_profile", "save_profile", "PROFILE_FORMAT"]

PROFILE_FORMAT, PROFILE_VERSION = "dog-init-profile", 1


@dataclass(frozen=True)
class LayerProfile:
    name: str                  # module name in the profiled model
    kernel_size: int
    depth: float               # relative depth among the profiled model's depthwise layers, 0 (first) .. 1 (last)
    kernels: int               # kernels of the layer
    clustered: float           # share of them in a family cluster, 0..1
    mix: dict[str, float]      # family shares among the clustered kernels (sum 1); empty if none is clustered


@dataclass(frozen=True)
class Profile:
    source: str
    layers: tuple[LayerProfile, ...]
    overall: dict[str, float]  # family shares among all clustered kernels of the model

    def __post_init__(self):
        if not any(layer.mix for layer in self.layers):
            raise ValueError(f"profile of {self.source!r} has no layer with clustered kernels; nothing to draw from")

    def mix_for(self, index: int, n_layers: int, kernel_size: int) -> dict[str, float]:
        """The mix for layer ``index`` of ``n_layers`` with ``kernel_size`` (see the module docstring)."""
        depth = index / (n_layers - 1) if n_layers > 1 else 0.5
        usable = [layer for layer in self.layers if layer.mix]
        size = min({layer.kernel_size for layer in usable}, key=lambda k: (abs(k - kernel_size), k))
        same = [layer for layer in usable if layer.kernel_size == size]
        return dict(min(same, key=lambda layer: (abs(layer.depth - depth), layer.depth)).mix)

    def to_dict(self) -> dict:
        return {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "source": self.source,
                "overall": self.overall, "layers": [asdict(layer) for layer in self.layers]}


def _mix(raw, where: str) -> dict[str, float]:
    if not raw:
        return {}
    try:
        return resolve_mix(raw)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def load_profile(path) -> Profile:
    """Read a profile written by ``python -m analysis profile``; ValueError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"profile {str(path)!r} not found (write one with `python -m analysis profile "
                                "--model SOURCE --out profile.json`)")
    try:
        raw = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"profile {str(path)!r} is not JSON: {err}") from None
    if not isinstance(raw, dict) or raw.get("format") != PROFILE_FORMAT or raw.get("version", 0) > PROFILE_VERSION:
        raise ValueError(f"{str(path)!r} is not a {PROFILE_FORMAT} file of version <= {PROFILE_VERSION}")
    layers = []
    try:
        for i, layer in enumerate(raw["layers"]):
            k, depth = int(layer["kernel_size"]), float(layer["depth"])
            if k < 3 or k % 2 == 0 or not 0 <= depth <= 1 or math.isnan(depth):
                raise ValueError(f"layer {i} ({layer.get('name')!r}): kernel_size {k} / depth {depth} out of range")
            layers.append(LayerProfile(str(layer["name"]), k, depth, int(layer["kernels"]),
                                       float(layer["clustered"]), _mix(layer["mix"], f"{path}: layer {i}")))
        overall = _mix(raw["overall"], f"{path}: overall")
    except (KeyError, TypeError) as err:
        raise ValueError(f"profile {str(path)!r} lacks or mistypes a field ({err!r}); expected "
                         "layers[{name, kernel_size, depth, kernels, clustered, mix}] and overall") from None
    if not layers:
        raise ValueError(f"profile {str(path)!r} has no layers")
    return Profile(str(raw.get("source", path.name)), tuple(layers), overall)


def save_profile(profile: Profile, path) -> Path:
    """Write ``profile`` as JSON, atomically."""
    from .files import atomic_path
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(profile.to_dict(), indent=1))
    return Path(path)


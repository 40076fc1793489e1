"""The weight a conv actually applies, read and written through weight reparameterisations.

``conv.weight.copy_(w)`` is only right when ``weight`` is a plain parameter. Under
``torch.nn.utils.parametrizations.weight_norm`` (or any ``torch.nn.utils.parametrize`` parametrisation) ``weight`` is
recomputed from ``parametrizations.weight.original*`` at every access, so copying into it changes a temporary and
nothing else; under the older hook-based ``torch.nn.utils.weight_norm`` it is recomputed from ``weight_g`` and
``weight_v`` before every forward, so a copy is overwritten at the first one. Here a parametrised weight is set
through the parametrisation's ``right_inverse`` (for weight norm: ``v = w``, ``g = ||w||`` per output channel, so the
effective weight ``g v / ||v||`` is ``w``), the hook-based weight norm through ``weight_g`` / ``weight_v``, and any
reparameterisation that cannot reproduce an arbitrary kernel exactly (spectral norm divides by the largest singular
value) is refused before anything is written.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["effective_weight", "check_writable", "write_weight_"]


def _weight_norm_hook(conv: nn.Module):
    from torch.nn.utils.weight_norm import WeightNorm
    return next((h for h in conv._forward_pre_hooks.values() if isinstance(h, WeightNorm) and h.name == "weight"),
                None)


def effective_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight the conv applies in its next forward, detached."""
    hook = _weight_norm_hook(conv)
    with torch.no_grad():
        return (hook.compute_weight(conv) if hook is not None else conv.weight).detach()


def check_writable(name: str, conv: nn.Conv2d) -> None:
    """ValueError naming the layer unless ``write_weight_`` can make ``conv`` apply any given kernel exactly.

    Checks, without touching ``conv``: a weight with storage (not on the ``meta`` device); for a parametrised weight,
    that a copy of the conv given a random kernel through ``right_inverse`` applies exactly that kernel."""
    parametrised = parametrize.is_parametrized(conv, "weight")
    probe = copy.deepcopy(conv) if parametrised else conv   # reading may update buffers (spectral norm's u, v)
    weight = effective_weight(probe)
    if weight.is_meta:
        raise ValueError(f"layer {name!r}: its weight is on the meta device (no values to set); materialise the model "
                         "first, e.g. model.to_empty(device='cpu')")
    if parametrised:
        kinds = ", ".join(type(p).__name__ for p in conv.parametrizations["weight"])
        value = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)).to(weight)
        try:
            with torch.no_grad():
                probe.weight = value
            exact = torch.allclose(probe.weight.detach(), value, rtol=1e-3, atol=1e-5)
        except (RuntimeError, NotImplementedError, ValueError):
            exact = False
        if not exact:
            raise ValueError(f"layer {name!r}: its weight is computed by the parametrisation {kinds}, which cannot be "
                             "set to a given kernel (no exact right_inverse); remove it with torch.nn.utils."
                             "parametrize.remove_parametrizations before dog_init_ and register it again after")
        return
    hooks = [type(h).__name__ for h in conv._forward_pre_hooks.values() if getattr(h, "name", None) == "weight"]
    if _weight_norm_hook(conv) is None and (hooks or not isinstance(conv._parameters.get("weight"), nn.Parameter)):
        raise ValueError(f"layer {name!r}: its weight is recomputed before every forward by "
                         f"{', '.join(hooks) or 'something other than a plain parameter'}, which dog_init_ cannot set "
                         "to a given kernel; remove it (e.g. torch.nn.utils.remove_spectral_norm) before dog_init_")


@torch.no_grad()
def write_weight_(name: str, conv: nn.Conv2d, value: torch.Tensor) -> None:
    """Make ``conv`` apply ``value`` (shape of its weight); ValueError naming the layer if it then does not."""
    hook = _weight_norm_hook(conv)
    if parametrize.is_parametrized(conv, "weight"):
        conv.weight = value.to(effective_weight(conv))   # right_inverse keeps the dtype and device of the originals
    elif hook is not None:
        v, g = conv.weight_v, conv.weight_g
        v.copy_(value)
        g.copy_(torch.norm_except_dim(v, 2, hook.dim))
        conv.weight = hook.compute_weight(conv)   # what the hook would set before the next forward
    else:
        conv.weight.copy_(value)
        return
    applied = effective_weight(conv)
    target = value.to(applied)
    if not torch.allclose(applied, target, rtol=1e-3, atol=1e-6 * float(target.abs().max())):
        raise ValueError(f"layer {name!r}: after writing, the conv applies a different kernel than dog_init_ set "
                         "(an unsupported weight reparameterisation); remove it before dog_init_")

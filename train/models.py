"""Model construction for the trainer: any timm model, initialised through ``dog_init``'s registry.

The CIFAR-sized ConvMixers (``convmixer_256_8``, ``convmixer_128_6``) are timm names through
``analysis.kernels.timm_models``, which registers them.
"""
from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path

import timm
import torch
from torch import nn

from analysis import create_model   # timm's, with the CIFAR ConvMixers and ConvMixer overrides
from dog_init import InitReport, convert_, dog_init_, find_depthwise, get_init, list_inits, load_profile

from .config import Config, ConfigError

__all__ = ["check_model_name", "build_model", "check_input_size", "freeze_depthwise_", "resolve_source"]


def check_model_name(name: str) -> None:
    """ConfigError for a name timm does not know, with the closest known names."""
    if timm.is_model(name):
        return
    known = timm.list_models()
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    close += [m for m in timm.list_models(f"*{name.split('_')[0]}*") if m not in close][:max(0, 6 - len(close))]
    raise ConfigError(f"unknown timm model {name!r}" + (f"; close names: {', '.join(close)}" if close else
                                                         "; see timm.list_models('*PATTERN*')"))


def _check_init(cfg: Config) -> None:
    if cfg.init.name not in list_inits():
        raise ConfigError(f"init.name must be one of {', '.join(list_inits())}, got {cfg.init.name!r}")
    if cfg.init.profile is not None and not Path(cfg.init.profile).is_file():
        raise ConfigError(f"init.profile {cfg.init.profile!r} does not exist (write one with "
                          "`python -m analysis profile --model ... --out profile.json`)")
    uses_dog = cfg.init.name == "dog" or cfg.init.parameterise == "dog"
    if cfg.init.source is not None and cfg.init.name not in _SOURCES:
        raise ConfigError(f"init.source is for init.name {' or '.join(_SOURCES)}, got init.name {cfg.init.name!r}")
    if _SOURCES.get(cfg.init.name) and cfg.init.source is None:
        raise ConfigError(f"init.name {cfg.init.name} needs init.source: a .npy of kernels (N, k, k), timm:NAME or a "
                          "weights file, e.g. ../shared/data/kernels/master-key-filters_k7.npy")
    if cfg.init.kwargs and cfg.init.name in ("default", "kaiming") and cfg.init.parameterise != "dog":
        raise ConfigError(f"init.kwargs {cfg.init.kwargs} given, but init.name {cfg.init.name} takes none")
    if cfg.train.freeze_depthwise and cfg.init.parameterise == "dog":
        raise ConfigError("train.freeze_depthwise keeps plain depthwise kernels fixed; DoGConv2d layers "
                          "(init.parameterise dog) learn through their family parameters: use one or the other")
    if cfg.init.parameterise == "dog" and cfg.init.scale != "default":
        raise ConfigError(f"init.parameterise dog starts from the kernels of init.scale default (DoGConv2d learns "
                          f"each kernel's gain); got init.scale {cfg.init.scale!r}")
    if cfg.init.profile is not None and not uses_dog:
        raise ConfigError(f"init.profile needs init.name dog (or init.parameterise dog), got {cfg.init.name!r}")


def build_model(cfg: Config, num_classes: int) -> tuple[nn.Module, InitReport | None]:
    """The timm model of ``cfg.model`` with ``num_classes`` outputs, initialised as ``cfg.init`` says.

    Seeds torch with ``train.seed`` first, so the default initialisation is reproducible too. Returns the model
    (on the CPU, float32) and dog_init's report (None for the default initialisation).
    """
    check_model_name(cfg.model.name)
    _check_init(cfg)
    torch.manual_seed(cfg.train.seed)
    try:
        model = create_model(cfg.model.name, pretrained=cfg.model.pretrained, num_classes=num_classes,
                             **cfg.model.kwargs)
    except TypeError as err:   # an unknown or duplicated keyword argument
        raise ConfigError(f"model.kwargs {cfg.model.kwargs} do not fit timm model {cfg.model.name!r}: {err}") from None
    if cfg.model.checkpoint:
        _load_weights(model, cfg.model.checkpoint)
    try:
        report = _initialise(model, cfg)
    except ConfigError:
        raise
    except ValueError as err:   # e.g. init.name dog on a model without depthwise convs; dog_init names the case
        raise ConfigError(f"init {cfg.init.name!r} on {cfg.model.name!r}: {err}") from None
    if cfg.train.freeze_depthwise and not freeze_depthwise_(model):
        raise ConfigError(f"train.freeze_depthwise: {cfg.model.name!r} has no depthwise convolution to freeze")
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, report


# Initialisers that draw kernels from a source (dog_init's ``source=``): required for bank, optional for covariance.
_SOURCES = {"bank": True, "covariance": False}


def _initialise(model: nn.Module, cfg: Config) -> InitReport | None:
    i = cfg.init
    seed = cfg.train.seed if i.seed is None else i.seed
    mix = load_profile(i.profile) if i.profile is not None else i.mix
    options = dict(scale=i.scale, include=i.include, exclude=i.exclude, seed=seed, **i.kwargs)
    if i.parameterise == "dog":
        return convert_(model, mix, residual=i.residual, **{k: v for k, v in options.items() if k != "scale"})
    if i.name == "dog":
        return dog_init_(model, mix, **options)
    if i.name in ("default", "kaiming"):
        return None
    if i.name in _SOURCES and i.source is not None:
        options["source"] = resolve_source(i.source, model)
    try:
        return get_init(i.name)(model, **options)
    except TypeError as err:   # an argument this initialiser does not take (init.kwargs)
        raise ConfigError(f"init.kwargs {i.kwargs} do not fit init {i.name!r}: {err}") from None


def resolve_source(source: str, model: nn.Module):
    """``init.source`` as dog_init takes it: a ``.npy`` path as is; ``timm:NAME`` or a weights file through
    analysis's extraction, as the kernels of the size the model's depthwise convs have most of (else the source's
    largest size; dog_init resizes)."""
    if source.lower().endswith(".npy") and not source.startswith("timm:"):
        if not Path(source).is_file():
            raise ConfigError(f"init.source {source!r} does not exist")
        return source
    from analysis import extract_depthwise
    try:
        kernels = extract_depthwise(source)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise ConfigError(f"init.source {source!r}: {err}") from None
    sizes = Counter(conv.kernel_size[0] for _, conv in find_depthwise(model)[0])
    want = max(sizes, key=sizes.get) if sizes else None
    k = want if want in kernels.sizes else max(kernels.sizes, key=lambda size: len(kernels[size]))
    return kernels[k].kernels[~kernels[k].degenerate]


def freeze_depthwise_(model: nn.Module) -> int:
    """Take every depthwise kernel out of training (``requires_grad`` off: no gradient, no optimiser state, no
    weight decay; an EMA of a constant stays that constant); biases still train. Returns the kernels frozen."""
    frozen = 0
    for _, conv in find_depthwise(model)[0]:
        for name, param in conv.named_parameters():
            if name != "bias":   # weight, or weight norm's parametrisation tensors
                param.requires_grad_(False)
        frozen += conv.out_channels
    return frozen


def _load_weights(model: nn.Module, path: str) -> None:
    """Load a state dict into ``model``: every tensor must fit, except the classifier head when the number of
    classes differs (then the head keeps its fresh initialisation, as in fine-tuning)."""
    from analysis import read_state_dict   # the one checkpoint reader (wrapper keys, DDP prefixes)
    try:
        state = read_state_dict(Path(path))
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"model.checkpoint: {err}") from None
    own = model.state_dict()
    head = str(getattr(model, "pretrained_cfg", {}).get("classifier", "head"))
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape and not k.startswith(head + ".")]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    if wrong or unexpected or missing:
        raise ConfigError(f"model.checkpoint {path!r} does not fit {type(model).__name__} (model.name / kwargs?): "
                          f"{len(wrong)} mis-shaped, {len(unexpected)} unexpected and {len(missing)} missing "
                          f"tensors, e.g. {(wrong + unexpected + missing)[:3]}")
    model.load_state_dict({k: v for k, v in state.items() if v.shape == own[k].shape}, strict=False)


def check_input_size(model: nn.Module, cfg: Config) -> None:
    """ConfigError when ``data.img_size`` images cannot pass through ``model`` (smaller than its patch or stem):
    one image, in eval mode (no statistics move, no random draw), before any training step or file is written."""
    size = cfg.data.img_size
    was_training = model.training
    x = torch.zeros(1, 3, size, size)
    if cfg.model.channels_last:
        x = x.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()(x)
    except (RuntimeError, ValueError, AssertionError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ConfigError(f"data.img_size {size} does not fit model {cfg.model.name!r}: a {size}x{size} image "
                          f"cannot pass through it ({first}); use a larger data.img_size") from None
    finally:
        model.train(was_training)

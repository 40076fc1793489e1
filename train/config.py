"""The trainer's configuration: one typed dataclass per component, commented defaults, recipes that set only what
differs, and dotted command-line overrides (``--optim.lr 0.01``).

A recipe is YAML ``{section: {key: value}}`` over the sections of ``Config`` (model, init, data, augment, optim,
schedule, train, tracking), optionally ``base: other.yaml`` (a path relative to the recipe) whose values it
overrides. Every value is checked against its field's type; an unknown section, key or option, or a value of the
wrong type, raises ``ConfigError`` naming it and listing the valid keys, before anything is written.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

__all__ = ["Config", "ModelConfig", "InitConfig", "DataConfig", "AugmentConfig", "OptimConfig", "ScheduleConfig",
           "TrainConfig", "TrackingConfig", "ConfigError", "load_recipe", "override_pairs", "apply_overrides",
           "validate", "to_dict", "to_yaml", "flat", "describe", "SECTIONS"]


class ConfigError(ValueError):
    """A bad recipe, key, option or value; the message names it and lists what is allowed."""


@dataclass
class ModelConfig:
    name: str = "convmixer_256_8"         # timm model name (analysis.kernels.timm_models adds convmixer_256_8 / _128_6)
    kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments, e.g. {patch_size: 14}
    pretrained: bool = False              # timm's pretrained weights (needs the hub or its local cache)
    checkpoint: Optional[str] = None      # start from this weights file (.safetensors / .pth) instead
    channels_last: bool = False           # NHWC memory format: faster convs on GPUs and CPUs
    sync_bn: bool = False                 # several processes: BatchNorm statistics over the global batch


@dataclass
class InitConfig:
    name: str = "default"                 # default kaiming dog covariance impulse box gaussian bank (list_inits())
    mix: Union[str, dict] = "paper"       # dog: preset (paper | on_off | uniform) or {family: weight}
    scale: Union[str, float] = "default"  # every init but default: default | match | unit | a kernel L2 norm
    seed: Optional[int] = None            # seed of the kernel draw; null = train.seed
    profile: Optional[str] = None         # dog: per-layer mix from `python -m analysis profile` (replaces mix)
    source: Optional[str] = None          # covariance / bank: kernels or covariance .npy, timm:NAME or weights file
    kwargs: dict = field(default_factory=dict)  # extra arguments of the initialiser, e.g. {sigma: 1.0} (gaussian)
    include: Optional[list] = None        # regexes of module names to initialise
    exclude: Optional[list] = None        # regexes of module names to leave alone
    parameterise: str = "none"            # none | dog: train DoGConv2d layers (learnable DoG parameters)
    residual: bool = False                # parameterise dog: add a free k x k kernel per channel, from zero


@dataclass
class DataConfig:
    name: str = "synthetic"               # synthetic | imagefolder | ffcv
    root: Optional[str] = None            # imagefolder: folder of split folders; ffcv: folder of <split>.beton
    train_split: str = "train"            # split folder (imagefolder) or file stem (ffcv) to train on
    val_split: str = "val"                # split to evaluate on (CIFAR-10's zip calls it "test")
    img_size: int = 32                    # training and evaluation resolution, pixels
    batch_size: int = 64                  # per process (global batch = batch_size x processes x accumulation)
    eval_batch_size: Optional[int] = None  # per process; null = 2 x batch_size
    workers: int = 2                      # DataLoader worker processes per training process
    train_subset: Optional[int] = None    # a fixed, class-balanced subset of this many training images
    val_subset: Optional[int] = None      # the same for the validation split
    subset_seed: int = 0                  # seed of the subsets: fixed across training seeds on purpose
    skip_bad: bool = False                # skip (and count) unreadable images instead of stopping
    crop_pct: float = 0.875               # evaluation: resize to img_size / crop_pct, centre-crop img_size
    interpolation: str = "bilinear"       # resize interpolation (timm names)
    mean: list = field(default_factory=lambda: [0.485, 0.456, 0.406])  # normalisation, RGB in [0, 1]
    std: list = field(default_factory=lambda: [0.229, 0.224, 0.225])
    num_classes: int = 10                 # synthetic only; real data take it from the class folders
    synthetic_train: int = 2000           # synthetic only: training images
    synthetic_val: int = 500              # synthetic only: validation images


@dataclass
class AugmentConfig:
    enabled: bool = True                  # false: no augmentation at all (resize + crop only, as in eval)
    scale: list = field(default_factory=lambda: [0.08, 1.0])  # random-resized-crop area range
    ratio: list = field(default_factory=lambda: [0.75, 1.3333333])  # random-resized-crop aspect range
    hflip: float = 0.5                    # horizontal-flip probability
    color_jitter: float = 0.0             # timm colour jitter strength
    auto_augment: Optional[str] = None    # timm policy string, e.g. rand-m9-mstd0.5-inc1 (RandAugment)
    re_prob: float = 0.0                  # random-erasing probability
    re_mode: str = "pixel"                # random-erasing fill: const | rand | pixel
    mixup: float = 0.0                    # mixup alpha (0 = off)
    cutmix: float = 0.0                   # cutmix alpha (0 = off)
    mixup_prob: float = 1.0               # probability of mixing a batch at all
    mixup_switch_prob: float = 0.5        # probability of cutmix rather than mixup when both are on
    label_smoothing: float = 0.0          # smoothing of the (possibly mixed) targets


@dataclass
class OptimConfig:
    name: str = "adamw"                   # timm optimiser (timm.optim.list_optimizers()): adamw, lamb, sgd, ...
    lr: float = 0.001                     # peak learning rate (when lr_base is null)
    lr_base: Optional[float] = None       # timm style: lr = lr_base x global batch / lr_base_size (replaces lr)
    lr_base_size: int = 256               # the global batch lr_base is given for
    lr_base_scale: str = "linear"         # linear | sqrt: how lr follows global batch / lr_base_size
    tuned_batch: Optional[int] = None     # the global batch the recipe's lr was tuned for; another one warns
    weight_decay: float = 0.05            # decoupled for adamw; biases and norms are exempt
    eps: Optional[float] = None           # Adam-family epsilon; null = the optimiser's default
    momentum: float = 0.9                 # sgd / rmsprop momentum
    clip_grad: Optional[float] = None     # clip the gradient norm (or value) to this; null = off
    clip_mode: str = "norm"               # norm | value
    accumulation: int = 1                 # micro-batches per optimiser step (windows end with the epoch)


@dataclass
class ScheduleConfig:
    name: str = "cosine"                  # timm: cosine | tanh | step | multistep | poly; or onecycle
    warmup_epochs: float = 0.0            # linear warm-up from warmup_lr (timm schedules)
    warmup_lr: float = 1.0e-5
    min_lr: float = 0.0                   # floor of the decay
    decay_epochs: float = 30.0            # step: epochs between decays
    decay_rate: float = 0.1               # step / multistep: factor per decay
    decay_milestones: list = field(default_factory=lambda: [30, 60, 90])  # multistep: epochs
    per_step: bool = True                 # update the lr every optimiser step rather than every epoch
    onecycle_peak: float = 0.4            # onecycle: fraction of training at which lr peaks
    onecycle_drop: float = 0.8            # onecycle: fraction of training where lr reaches lr / 20


@dataclass
class TrainConfig:
    epochs: int = 2                       # training epochs
    seed: int = 0                         # seeds everything: model, init, data order, augmentation
    precision: str = "no"                 # no | bf16 | fp16 (Accelerate mixed precision; fp16 needs CUDA)
    ema: bool = False                     # keep an EMA of the weights (timm ModelEmaV3), evaluated too
    ema_decay: float = 0.9998             # EMA decay per optimiser step
    ema_warmup: bool = False              # timm ModelEmaV3 warm-up: decay grows from 0 towards ema_decay
    log_interval: int = 50                # optimiser steps between TensorBoard train scalars
    keep_last: int = 2                    # epoch checkpoints kept (the best one is kept too)
    checkpoint_every_steps: Optional[int] = None  # also a mid-epoch checkpoint every N optimiser steps (newest kept)
    best_by: str = "model"                # model | ema: the best checkpoint by the model's or the EMA's top-1
    freeze_depthwise: bool = False        # keep every depthwise kernel at its initial value (biases still train)
    output_dir: Optional[str] = None      # run folder; null = runs/<recipe name>
    compile: bool = False                 # torch.compile the model
    threads: Optional[int] = None         # torch threads per process on CPU; null = torch's choice
    trackers: list = field(default_factory=lambda: ["tensorboard"])  # + wandb mlflow aim ... (Accelerate log_with)


@dataclass
class TrackingConfig:
    census: bool = True                   # classify the depthwise kernels at epoch 0 and after every epoch
    at_steps: list = field(default_factory=list)  # extra censuses after these optimiser steps
    ema: bool = True                      # also census the EMA weights (when train.ema)
    figures: bool = True                  # TensorBoard per-layer bars and sample kernels at each census
    histograms: bool = True               # TensorBoard histograms of the depthwise weights at each census
    samples_per_family: int = 8           # kernels per family in the sample figure
    fit: bool = False                     # fit the DoG formula too: median sigma / residual per family


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


SECTIONS: dict[str, type] = dict(typing.get_type_hints(Config))
# Values a field may take where its type alone is too loose; checked again (with live registries) at build time.
CHOICES = {("data", "name"): ("synthetic", "imagefolder", "ffcv"), ("init", "parameterise"): ("none", "dog"),
           ("train", "precision"): ("no", "bf16", "fp16"), ("optim", "clip_mode"): ("norm", "value"),
           ("augment", "re_mode"): ("const", "rand", "pixel"), ("train", "best_by"): ("model", "ema"),
           ("optim", "lr_base_scale"): ("linear", "sqrt")}


# ------------------------------------------------------------------------------------------ type checking
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return {type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _admits(hint, kind) -> bool:
    """Whether the field type ``hint`` takes values of ``kind`` (ints count as floats)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return any(_admits(a, kind) for a in typing.get_args(hint))
    base = typing.get_origin(hint) or hint
    return base is kind or (base is float and kind is int)


def _coerce(value, hint, key: str):
    """``value`` as the field type ``hint`` (ints are floats too), or ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
    elif hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):   # YAML 1.1 reads 1e-3 as text
            number = float(value)
        elif isinstance(value, str) and value.strip().lower().lstrip("+-.") in ("nan", "inf", "infinity"):
            number = float("nan")   # "nan" / "inf" as text: refused below like YAML's .nan / .inf
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key} must be a finite number, got {value!r} (no setting of this trainer "
                                  "gives infinity or NaN a meaning)")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint in (list, dict) or origin in (list, dict):
        if isinstance(value, origin or hint):
            return value
    raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})")


def _set(cfg: Config, dotted: str, value, where: str) -> None:
    section, _, key = dotted.partition(".")
    if section not in SECTIONS:
        raise ConfigError(f"unknown section {section!r} in {where}; valid sections: {', '.join(SECTIONS)}")
    part = getattr(cfg, section)
    hints = _hints(type(part))
    if not key or "." in key or key not in hints:
        raise ConfigError(f"unknown key {dotted!r} in {where}; valid keys of {section}: {', '.join(hints)}")
    value = _coerce(value, hints[key], dotted)
    allowed = CHOICES.get((section, key))
    if allowed and value not in allowed:
        raise ConfigError(f"{dotted} must be one of {', '.join(allowed)}, got {value!r}")
    setattr(part, key, value)


# ------------------------------------------------------------------------------------------ recipes
def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"recipe {str(path)!r} " + ("is not a file" if path.exists() else "does not exist"))
    if path.resolve() in chain:
        raise ConfigError(f"recipe {str(path)!r} includes itself through 'base'")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {str(path)!r} must be a mapping of sections, got {type(raw).__name__}")
    merged: dict = {}
    if "base" in raw:
        base = raw.pop("base")
        if not isinstance(base, str):
            raise ConfigError(f"'base' in {str(path)!r} must be a recipe path, got {base!r}")
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"recipe {str(path)!r} names base: {base!r}, but {str(base_path)!r} "
                              + ("is not a file" if base_path.exists() else "does not exist")
                              + " (base is a path relative to the recipe's folder)")
        merged = _read_yaml(base_path, chain + (path.resolve(),))
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} in {str(path)!r} must be a mapping of keys, got {values!r}")
        merged.setdefault(section, {}).update(values)
    return merged


def load_recipe(path: str | Path | None) -> Config:
    """The defaults, overridden by the recipe at ``path`` (and its ``base`` chain)."""
    cfg = Config()
    if path is None:
        return cfg
    for section, values in _read_yaml(Path(path)).items():
        for key, value in values.items():
            _set(cfg, f"{section}.{key}", value, f"recipe {str(path)!r}")
    return cfg


def override_pairs(tokens: list[str]) -> list[tuple[str, str]]:
    """``["--optim.lr", "0.1", "--data.root=D"]`` -> ``[("optim.lr", "0.1"), ("data.root", "D")]``; ConfigError
    naming a token that is no ``--SECTION.KEY`` or has no value."""
    pairs, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        name = token[2:].split("=", 1)[0]
        if not token.startswith("--") or "." not in name:
            raise ConfigError(f"unknown option {token!r}; give --SECTION.KEY VALUE with sections {', '.join(SECTIONS)}")
        if "=" in token:
            pairs.append((name, token.split("=", 1)[1]))
            i += 1
        elif i + 1 < len(tokens):
            pairs.append((name, tokens[i + 1]))
            i += 2
        else:
            raise ConfigError(f"option {token} needs a value")
    return pairs


def apply_overrides(cfg: Config, pairs: list[tuple[str, str]]) -> Config:
    """Apply ``[("optim.lr", "0.01"), ...]``; each text value is read as YAML (``null``, ``[1, 2]``, ``true``)."""
    for dotted, text in pairs:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        # A field that takes text keeps the literal text: `--data.root 2024` is a folder name, not a number.
        section, _, key = dotted.partition(".")
        hint = _hints(SECTIONS[section]).get(key) if section in SECTIONS else None
        if value is not None and not isinstance(value, str) and _admits(hint, str) and not _admits(hint, type(value)):
            value = text
        _set(cfg, dotted, value, "the command line")
    return cfg


# ------------------------------------------------------------------------------------------ meaning
_POSITIVE = ("optim.lr_base_size", "data.img_size", "data.batch_size", "data.num_classes", "data.synthetic_train", "data.synthetic_val",
             "optim.lr", "optim.accumulation", "train.epochs", "train.log_interval", "train.keep_last",
             "tracking.samples_per_family")


def validate(cfg: Config) -> Config:
    """Checks that types alone cannot make (ranges, registries, devices); ConfigError naming the key."""
    import torch
    from dog_init import resolve_mix
    from dog_init.init import check_scale

    def get(dotted):
        section, key = dotted.split(".")
        return getattr(getattr(cfg, section), key)

    for section in SECTIONS:
        for key, value in vars(getattr(cfg, section)).items():
            if isinstance(value, list) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
                raise ConfigError(f"{section}.{key} must hold finite numbers, got {value}")
    for dotted in _POSITIVE:
        if not get(dotted) > 0:
            raise ConfigError(f"{dotted} must be > 0, got {get(dotted)!r}")
    for dotted in ("data.workers", "optim.weight_decay", "augment.mixup", "augment.cutmix", "augment.re_prob",
                   "augment.label_smoothing", "schedule.warmup_epochs", "schedule.min_lr"):
        if get(dotted) < 0:
            raise ConfigError(f"{dotted} must be >= 0, got {get(dotted)!r}")
    for dotted in ("data.train_subset", "data.val_subset", "data.eval_batch_size", "optim.clip_grad", "optim.lr_base",
                   "optim.tuned_batch", "train.checkpoint_every_steps"):
        if get(dotted) is not None and not get(dotted) > 0:
            raise ConfigError(f"{dotted} must be > 0 or null, got {get(dotted)!r}")
    if not 0 < cfg.data.crop_pct <= 1:
        raise ConfigError(f"data.crop_pct must be in (0, 1], got {cfg.data.crop_pct}")
    if len(cfg.data.mean) != 3 or len(cfg.data.std) != 3 or min(cfg.data.std) <= 0:
        raise ConfigError(f"data.mean / data.std must be 3 numbers (RGB), std > 0; got {cfg.data.mean} / "
                          f"{cfg.data.std}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in cfg.tracking.at_steps):
        raise ConfigError(f"tracking.at_steps must be a list of positive step numbers, got {cfg.tracking.at_steps}")
    if cfg.train.best_by == "ema" and not cfg.train.ema:
        raise ConfigError("train.best_by ema needs train.ema true (there is no EMA to rank checkpoints by)")
    if cfg.model.sync_bn and not torch.cuda.is_available():
        raise ConfigError("model.sync_bn needs CUDA GPUs (torch's SyncBatchNorm has no CPU kernels); set it false")
    if cfg.train.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.precision fp16 needs a CUDA GPU (none here); use bf16 or no")
    try:
        resolve_mix(cfg.init.mix)
        check_scale(cfg.init.scale)
    except ValueError as err:
        raise ConfigError(f"init: {err}") from None
    return cfg


# ------------------------------------------------------------------------------------------ output
def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def flat(cfg: Config) -> dict[str, object]:
    """``{"optim.lr": 0.01, ...}`` with lists, dicts and None as text (TensorBoard hyper-parameters)."""
    return {f"{section}.{key}": value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for section, values in to_dict(cfg).items() for key, value in values.items()}


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)


_COMMENT = re.compile(r"^\s+(\w+):.*?#\s?(.*)$")


def describe() -> str:
    """Every section and key with its default and its comment, for ``--help``."""
    lines = []
    for section, cls in SECTIONS.items():
        comments = {m.group(1): m.group(2) for m in map(_COMMENT.match, inspect.getsource(cls).splitlines()) if m}
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  --{section}.{f.name} {yaml.safe_dump(default, default_flow_style=True).strip()}"
                         .replace("\n...", "") + (f"   # {comments[f.name]}" if f.name in comments else ""))
    return "\n".join(lines)

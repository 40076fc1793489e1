"""``python -m train.evaluate RUN [--checkpoint FILE|RUN/checkpoints/epoch_N] [--ema] [--tta flip] [--out FILE]
[--SECTION.KEY VALUE ...]``: score a trained model without training (timm's ``validate.py`` for this trainer).

The run's ``config.yaml`` builds the model and the validation data; ``--SECTION.KEY VALUE`` overrides it as in
training (``--data.root``, ``--data.img_size``, ``--data.crop_pct``, ``--data.val_split``). The weights are the run's
final ``model.safetensors`` (``model_ema.safetensors`` with ``--ema``), another weights file, or an epoch checkpoint
(its model, or with ``--ema`` its EMA); keys of DDP-wrapped or compiled models are read as the plain model's. Top-1 /
top-5 count every validation image exactly once across processes (also under ``torchrun`` / ``accelerate launch``);
the census of the evaluated weights comes with them. Results go to stdout and, with ``--out``, to a JSON file
(written atomically). Exit status: 0 done, 2 a bad run folder, checkpoint, option or value (nothing written).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis import read_state_dict
from dog_init.files import atomic_path, check_output_file

from .census import Census, count_classes
from .checkpoint import CheckpointError, CheckpointManager
from .config import ConfigError, apply_overrides, describe, load_recipe, override_pairs, validate
from .data import build_data
from .engine import evaluate
from .models import build_model
from .trainer import make_accelerator

__all__ = ["evaluate_run", "main"]

# Where an epoch checkpoint keeps the EMA: Accelerate's custom objects in registration order (schedule, state, EMA).
EMA_IN_CHECKPOINT = "custom_checkpoint_2.pkl"


def weights_path(run: Path, checkpoint: str | None, ema: bool) -> tuple[Path, bool]:
    """(file to load, whether it holds the training-time model): the final weights are baked (DoGConv2d runs are
    saved as plain convs), an epoch checkpoint is not. ConfigError naming a missing or broken one."""
    if checkpoint is None:
        path = run / ("model_ema.safetensors" if ema else "model.safetensors")
        if not path.is_file():
            raise ConfigError(f"{str(path)!r} does not exist (the run has not finished; give --checkpoint "
                              f"{run}/checkpoints/epoch_N)")
        return path, False
    path = Path(checkpoint)
    if path.is_dir():
        try:
            CheckpointManager.verify(path)
        except CheckpointError as err:
            raise ConfigError(f"--checkpoint: {err}") from None
        inner = path / (EMA_IN_CHECKPOINT if ema else "model.safetensors")
        if not inner.is_file():
            raise ConfigError(f"checkpoint {str(path)!r} holds no {'EMA' if ema else 'model'} ({inner.name})")
        return inner, True
    if not path.is_file():
        raise ConfigError(f"--checkpoint {checkpoint!r} does not exist")
    return path, False


def evaluate_run(run: Path, *, checkpoint: str | None = None, ema: bool = False, tta: bool = False,
                 overrides: list[tuple[str, str]] = (), log=print) -> dict:
    """Top-1 / top-5 / loss over the validation set and the census of the chosen weights of ``run``."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{str(run)!r} is not a run folder (no config.yaml)")
    cfg = apply_overrides(load_recipe(run / "config.yaml"), list(overrides))
    path, training_form = weights_path(run, checkpoint, ema)
    if not training_form:
        cfg.init.parameterise = "none"   # final weights hold DoGConv2d layers baked into plain convs
    cfg.model.sync_bn = False
    validate(cfg)
    accelerator = make_accelerator(cfg, trackers=False)
    data = build_data(cfg, accelerator)
    model, _ = build_model(cfg, count_classes(cfg))
    try:
        state = read_state_dict(path)
        model.load_state_dict(state)
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"{str(path)!r} does not fit the run's model {cfg.model.name!r}: {str(err)[:300]}") from None
    census = Census(log=log).measure(model.eval()).record if accelerator.is_main_process else None
    prepared = accelerator.prepare(model)
    metrics = evaluate(prepared, data.val, accelerator, prepared=data.prepared, tta=tta)
    return {"run": str(run), "weights": str(path), "ema": ema, "tta": "flip" if tta else None, **metrics,
            "census": census}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0],
                                     epilog="overrides of the run's configuration (--SECTION.KEY VALUE, default, "
                                            "meaning):\n" + describe(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("run", type=Path, metavar="RUN", help="run folder of python -m train")
    parser.add_argument("--checkpoint", metavar="PATH", help="weights file or RUN/checkpoints/epoch_N "
                        "(default RUN/model.safetensors)")
    parser.add_argument("--ema", action="store_true", help="the EMA weights (model_ema.safetensors, or the "
                        "checkpoint's EMA)")
    parser.add_argument("--tta", choices=("flip",), help="test-time augmentation: average with the mirrored image")
    parser.add_argument("--out", metavar="FILE.json", help="also write the results here")
    args, rest = parser.parse_known_args(argv)
    try:
        overrides = override_pairs(rest)
        if args.out:
            check_output_file(args.out, "--out")
        result = evaluate_run(args.run, checkpoint=args.checkpoint, ema=args.ema, tta=args.tta == "flip",
                              overrides=overrides)
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    if result["census"] is None:   # not the main process
        return 0
    print(f"{result['weights']}: top1 {result['top1']:.2f}%  top5 {result['top5']:.2f}%  loss "
          f"{result['eval_loss']:.4f}  ({result['eval_images']} images)  clustered "
          f"{100 * result['census']['clustered']:.1f}%")
    if args.out:
        with atomic_path(args.out, what="--out") as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

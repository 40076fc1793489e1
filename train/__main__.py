"""``python -m train --config recipes/X.yaml [--output-dir D] [--epochs N] [--seed S] [--resume auto|PATH]
[--rescale-schedule] [--SECTION.KEY VALUE ...]``: train a timm model with default or DoG initialisation and watch its depthwise kernels'
clusters (also under ``accelerate launch -m train`` and ``torchrun --nproc_per_node N -m train``).

Exit status: 0 done; 2 bad configuration / option / data folder, a run folder in use by another run, a checkpoint
that does not fit the configuration, or a resume that changes the batch geometry (nothing written); 1 a failure
during training (an unreadable image, a loss that stopped being finite: the last good checkpoint is kept);
130 interrupted by Ctrl-C (the checkpoint being written was finished; resume with --resume auto); after SIGTERM
143 and after SIGUSR1 0, both once a checkpoint at the current optimiser step is written (``train.signals``:
``--resume auto`` continues at the exact batch).
"""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, apply_overrides, describe, load_recipe, override_pairs

OPTIONS = ("--config", "--output-dir", "--epochs", "--seed", "--resume", "--rescale-schedule")


def parse_args(argv=None):
    """(options, Config); exits with status 2 and a message naming the bad option, key or value."""
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0],
                                     epilog="configuration keys (--SECTION.KEY VALUE, default, meaning):\n"
                                            + describe(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--config", metavar="RECIPE.yaml", help="recipe; keys it does not set keep their defaults")
    parser.add_argument("--output-dir", metavar="DIR", help="run folder (train.output_dir; default runs/<recipe>)")
    parser.add_argument("--epochs", type=int, metavar="N", help="train.epochs")
    parser.add_argument("--seed", type=int, metavar="S", help="train.seed")
    parser.add_argument("--resume", metavar="auto|PATH", help="continue from the newest complete checkpoint of the "
                        "output dir (auto) or from OUTPUT/checkpoints/epoch_N")
    parser.add_argument("--rescale-schedule", action="store_true",
                        help="with --resume: accept another data.batch_size, number of processes or optim.accumulation "
                             "than the run's, and continue at the same fraction of the schedule (and epoch) in the "
                             "new number of updates per epoch; such a resume is not bit-exact")
    args, rest = parser.parse_known_args(argv)
    if args.rescale_schedule and args.resume is None:
        parser.error("--rescale-schedule needs --resume auto|PATH")
    try:
        pairs = override_pairs(rest)
    except ConfigError as err:
        parser.error(f"{err}; options: {', '.join(OPTIONS)} (see --help)")
    try:
        cfg = apply_overrides(load_recipe(args.config), pairs)
        for key, value in (("train.epochs", args.epochs), ("train.seed", args.seed),
                           ("train.output_dir", args.output_dir)):
            if value is not None:
                apply_overrides(cfg, [(key, str(value))])
    except ConfigError as err:
        parser.error(str(err))
    return args, cfg, parser


def main(argv=None) -> int:
    args, cfg, parser = parse_args(argv)
    from .data import UnreadableImage
    from .engine import Diverged
    from .signals import EXIT_CODES, Preempted
    from .trainer import fit
    try:
        fit(cfg, resume=args.resume, recipe=args.config, rescale_schedule=args.rescale_schedule)
    except ConfigError as err:
        parser.error(str(err))
    except Diverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return 1
    except UnreadableImage as err:
        # A worker's error arrives wrapped in its traceback; the last line is ours and names the file.
        print(f"error: unreadable image: {str(err).strip().splitlines()[-1].split('UnreadableImage: ')[-1]}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; no partial checkpoint was left. Continue with --resume auto", file=sys.stderr)
        return 130
    except Preempted as err:
        print(f"preempted: {err}. Continue with --resume auto", file=sys.stderr)
        return EXIT_CODES[err.signum]
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m dog_init preview|init ...`` (see ``--help``)."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

from .families import check_size
from .files import atomic_path, check_output_file
from .init import dog_init_
from .mixes import MIXES, resolve_mix, sample
from .preview import MAX_GRID_KERNELS, save_kernel_grid


def _mix_arg(text: str):
    """A preset name, or JSON such as '{"on_centre": 1, "first_derivative": 1}'."""
    try:
        mix = json.loads(text) if text.lstrip().startswith("{") else text
        resolve_mix(mix)  # fail before any work
    except ValueError as err:  # json.JSONDecodeError is a ValueError too
        raise argparse.ArgumentTypeError(str(err)) from None
    return mix


def _png(path: str, flag: str) -> Path:
    if not path.lower().endswith(".png"):
        raise ValueError(f"{flag} must be a .png file, got {path!r}")
    return check_output_file(path, flag)


def _count(n: int) -> int:
    if not 1 <= n <= MAX_GRID_KERNELS:
        raise ValueError(f"--n must be between 1 and {MAX_GRID_KERNELS} (kernels in one grid), got {n}")
    return n


def _timm_model(name: str):
    import difflib

    import timm
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(f"unknown timm model {name!r}" + (f"; close names: {', '.join(close)}" if close else
                                                           "; see timm.list_models('*PATTERN*')"))
    return timm.create_model(name, pretrained=False)


def preview(args) -> None:
    out = _png(args.out, "--out")
    check_size(args.size)
    _count(args.n)
    kernels, families = sample(args.n, args.size, args.mix, generator=torch.Generator().manual_seed(args.seed))
    save_kernel_grid(kernels, families, out, suptitle=f"{args.n} kernels, {args.size}x{args.size}, mix {args.mix}")
    print(f"wrote {out}")


def init(args) -> None:
    # Every output and option is checked before the model is built; both files appear together or not at all.
    preview_path = _png(args.preview, "--preview") if args.preview else None
    report_path = check_output_file(args.report, "--report") if args.report else None
    if preview_path and report_path and preview_path.resolve() == report_path.resolve():
        raise ValueError(f"--report and --preview name the same file {args.report!r}")
    _count(args.n)
    model = _timm_model(args.model)
    report = dog_init_(model, args.mix, scale=args.scale, seed=args.seed)
    print(report.summary())
    with contextlib.ExitStack() as stack:
        if report_path:
            stack.enter_context(atomic_path(report_path, what="--report")).write_text(
                json.dumps(report.to_dict(), indent=1))
        if preview_path:
            first = report.layers[0]
            conv = model.get_submodule(first.name)
            n = min(args.n, conv.out_channels)
            save_kernel_grid(conv.weight.detach()[:n, 0], first.families[:n],
                             stack.enter_context(atomic_path(preview_path, what="--preview")),
                             suptitle=f"{args.model}: {first.name}, first {n} of {conv.out_channels} kernels")
    for path in (report_path, preview_path):
        if path:
            print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dog_init", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preview", help="save a grid of sampled kernels, each titled with its family")
    p.add_argument("--mix", type=_mix_arg, default="paper", help=f"preset ({', '.join(MIXES)}) or JSON dict")
    p.add_argument("--size", type=int, default=7, help="odd kernel size >= 3")
    p.add_argument("--n", type=int, default=64, help=f"number of kernels (1 to {MAX_GRID_KERNELS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="kernels.png", help="PNG path")
    p.set_defaults(run=preview)
    p = sub.add_parser("init", help="DoG-initialise a timm model and print / save the report")
    p.add_argument("--model", required=True, help="timm model name, e.g. convmixer_768_32")
    p.add_argument("--mix", type=_mix_arg, default="paper")
    p.add_argument("--scale", default="default", help="default | match | unit | a float (kernel L2 norm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=64,
                   help=f"kernels of the first layer to draw with --preview (1 to {MAX_GRID_KERNELS})")
    p.add_argument("--report", help="write the InitReport as JSON here")
    p.add_argument("--preview", help="PNG of the first depthwise layer's kernels")
    p.set_defaults(run=init)
    args = parser.parse_args(argv)
    if getattr(args, "scale", None) not in (None, "default", "match", "unit"):
        try:
            args.scale = float(args.scale)
        except ValueError:
            parser.error(f"--scale must be default, match, unit or a float, got {args.scale!r}")
    try:
        args.run(args)
    except (ValueError, TypeError) as err:   # bad input, named in the message: usage + status 2
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line for the kernel-cluster analysis (Babaiee et al., ICLR 2024): ``python -m analysis report|fit|classify``.

  report    classify a model's depthwise kernels and write figures + tables (Fig. 3-5, 7/11, 10; Table 1)
  fit       train a classifier (autoencoder, Sec. 3.2-3.3; k-means for 3x3, Sec. 3.4) on kernels of one size
  classify  print the cluster shares of kernel files per size (optionally a per-kernel CSV)
  profile   per-layer family mixes of a trained model, to initialise another with dog_init_(mix=profile)

Bad input (missing file, unknown model, bad size or option) exits with status 2 and a message naming the value,
before any work is done. Ctrl-C exits with status 130 and one line saying what was kept; outputs only ever appear
complete, so an interrupted run leaves them as they were (fit keeps its resumable training state).
"""
from __future__ import annotations

import argparse
import difflib
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from dog_init.files import check_output_file


SOURCE_HELP = ("'timm:NAME[.TAG]' (e.g. timm:convnext_tiny.fb_in1k), a weights file (.pt .pth .bin .safetensors) "
               "or a kernel array (.npy .npz)")


# ------------------------------------------------------------------------------------------ argument types
def _existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist" if not Path(text).exists()
                                         else f"{text!r} is not a file")
    return text


def _kernel_file(text: str) -> str:
    _existing_file(text)
    if Path(text).suffix.lower() not in (".npy", ".npz"):
        raise argparse.ArgumentTypeError(f"kernel file {text!r} must be a .npy or .npz array")
    return text


def _classifier_file(text: str) -> str:
    path = Path(text)
    if path.is_dir() or (path.suffix == ".safetensors" and path.is_file()):
        return text
    raise argparse.ArgumentTypeError(f"classifier {text!r} " + ("does not exist" if not path.exists() else
                                     "must be a classifier_k*.safetensors file or a folder holding one"))


def _source(text: str) -> str:
    """A model source; timm names are checked against timm's registry here so typos fail before any loading."""
    from .kernels.extract import ALLOWED_EXTENSIONS
    if text.startswith("timm:"):
        from .kernels.timm_models import timm  # timm, with the CIFAR ConvMixers registered
        base = text[len("timm:"):].partition(".")[0]
        if not base or not timm.is_model(base):
            close = difflib.get_close_matches(base, timm.list_models(), n=4, cutoff=0.6)
            raise argparse.ArgumentTypeError(f"unknown timm model {base!r} in {text!r}"
                                             + (f"; close names: {', '.join(close)}" if close else ""))
        return text
    path = Path(text)
    if not path.exists():
        from .kernels.timm_models import timm  # timm, with the CIFAR ConvMixers registered
        hint = f"; did you mean 'timm:{text}'?" if timm.is_model(text.partition(".")[0]) else ""
        raise argparse.ArgumentTypeError(f"source {text!r} is neither 'timm:NAME' nor an existing file{hint}")
    if path.suffix.lower() not in ALLOWED_EXTENSIONS or not path.is_file():
        raise argparse.ArgumentTypeError(f"source {text!r} must be a file ending in {' '.join(ALLOWED_EXTENSIONS)}")
    return text


def _odd_size(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be an integer, got {text!r}") from None
    if k < 3 or k % 2 == 0:
        raise argparse.ArgumentTypeError(f"size must be an odd integer >= 3 (3, 5, 7, ...), got {text!r}")
    return k


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value
    return parse


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if len(widths) != 4 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be 4 positive integers like 512,256,128,64, got {text!r}")
    return widths


def _threshold(text: str) -> float:
    value = _positive(float)(text)
    if value >= 2:
        raise argparse.ArgumentTypeError(f"threshold is a cosine dissimilarity in (0, 2), got {text!r}")
    return value


# ------------------------------------------------------------------------------------------------- report
def report(args, parser) -> None:
    from .report.folder import run_report
    from .report.tables import share_table
    if args.checkpoint and not args.model:
        parser.error("--checkpoint needs --model timm:NAME")
    sources = args.model if args.model else list(args.kernels)
    summary = run_report(sources, args.out, args.classifier or None, checkpoint=args.checkpoint,
                         overwrite=args.overwrite, seed=args.seed, per_cluster=args.per_cluster,
                         max_points=args.max_points, progress=not args.quiet, fit=args.fit)
    args.wrote = True       # a Ctrl-C from here on no longer leaves --out as it was
    print(share_table(summary["rows"]))
    for s in summary["skipped"]:
        print(f"skipped {s['size']}x{s['size']} ({s['n_kernels']} kernels): {s['reason']}")


# ---------------------------------------------------------------------------------------------------- fit
def fit(args, parser) -> None:
    from .classify.train_classifier import run_fit
    run_fit(args, parser)


# ----------------------------------------------------------------------------------------------- classify
def classify(args, parser) -> None:
    from .report.tables import classify_files, share_table
    if args.csv:
        check_output_file(args.csv, "--csv")          # before any work
    rows = classify_files(args.kernels, args.classifier or None, csv=args.csv)
    print(share_table(rows))
    if args.csv:
        args.wrote = True
        print(f"wrote {args.csv}")


# ------------------------------------------------------------------------------------------------ profile
def profile(args, parser) -> None:
    from .classify.profile import write_profile
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        parser.error(f"--out must be a .json file, got {args.out!r}")
    try:   # a folder there, a file where a folder is needed, or an unwritable folder
        check_output_file(out, "--out")
    except ValueError as err:
        parser.error(str(err))
    if out.exists() and not args.overwrite:
        parser.error(f"--out {args.out!r} exists; pass --overwrite")
    if args.checkpoint and not (args.model and args.model.startswith("timm:")):
        parser.error("--checkpoint needs --model timm:NAME")
    write_profile(args.model if args.model else list(args.kernels), out, checkpoint=args.checkpoint,
                  classifiers=args.classifier or None)
    args.wrote = True


# ------------------------------------------------------------------------------------------------- Ctrl-C
def _interrupted(args) -> str:
    """The line printed on Ctrl-C: what was kept. Outputs appear only complete (report: a folder renamed into
    place; files: ``atomic_path``), so an interrupted run leaves its output as it was; fit keeps its resumable state."""
    command = getattr(args, "command", None)
    if command == "fit" and (state := Path(args.out) / "fit_state.pt").exists():
        return f"interrupted; the training state {str(state)!r} was kept: continue with --resume"
    out = getattr(args, "csv" if command == "classify" else "out", None)
    if out and getattr(args, "wrote", False):
        return f"interrupted after {out!r} was written"
    if not out:
        return "interrupted; nothing was written"
    return (f"interrupted; {out!r} was left as it was" if Path(out).exists() else
            f"interrupted; nothing was written ({out!r} was not created)")


@contextmanager
def _finaliser_interrupts_resent():
    """Python prints a Ctrl-C that lands in a ``__del__`` (a finaliser of numpy, torch, matplotlib) as an ignored
    exception with its traceback, and the run goes on; such an interrupt is sent again instead, to stop the run at
    the next ordinary line."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


# ---------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("report", help="figures + tables of a model's kernel clusters")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=_source, metavar="SOURCE", help=SOURCE_HELP)
    src.add_argument("--kernels", type=_kernel_file, nargs="+", metavar="FILE",
                     help="kernel arrays; <model>_k<size>.npy files of one model are reported together")
    p.add_argument("--checkpoint", type=_existing_file, metavar="FILE", help="weights for --model timm:NAME")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (must be new or empty)")
    p.add_argument("--classifier", type=_classifier_file, nargs="+", metavar="PATH",
                   help="classifier_k*.safetensors per size (default: the bundled ones)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the sampled kernels / points")
    p.add_argument("--per-cluster", type=_positive(int), default=8, metavar="N",
                   help="kernels per cluster in *_samples.png")
    p.add_argument("--max-points", type=_positive(int), default=5000, metavar="N", help="points in *_pca.png")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--fit", action="store_true", help="also fit every kernel's closed form (analysis.fit): centre "
                   "sigma per layer, first-derivative orientations, residual per cluster, fit vs autoencoder")
    p.set_defaults(run=report, sub=p)   # errors then carry the subcommand's usage

    p = sub.add_parser("fit", help="train a classifier for one kernel size")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--kernels", type=_kernel_file, nargs="+", metavar="FILE", help="kernel arrays (.npy/.npz)")
    src.add_argument("--models", type=_source, nargs="+", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--checkpoint", type=_existing_file, metavar="FILE", help="weights for --models timm:NAME")
    p.add_argument("--size", type=_odd_size, required=True, help="kernel size k (3 uses k-means)")
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/classifier_k<size>.safetensors + .json")
    p.add_argument("--epochs", type=_positive(int), default=60, metavar="N", help="maximum epochs (early stopping)")
    p.add_argument("--patience", type=_positive(int), default=6, metavar="N",
                   help="epochs without improvement before stopping")
    p.add_argument("--widths", type=_widths, default=(512, 256, 128, 64), metavar="W1,W2,W3,W4",
                   help="the 4 encoder widths (decoder mirrors them)")
    p.add_argument("--lr", type=_positive(float), default=1e-3)
    p.add_argument("--batch-size", type=_positive(int), default=1024, metavar="N")
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threshold", type=_threshold, metavar="T",
                   help="cosine-dissimilarity threshold (default: 0.3 for 7x7, 0.2 for 5x5)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N_PER_FAMILY",
                   help="add N noisy DoG kernels per family to the training data")
    p.add_argument("--intervals", type=_existing_file, metavar="JSON", help="manual interval names (labels.py)")
    p.add_argument("--n-classes", type=_positive(int), default=10, metavar="N", help="k-means classes for 3x3")
    p.add_argument("--resume", action="store_true", help="continue the run saved in DIR/fit_state.pt")
    p.add_argument("--overwrite", action="store_true", help="start again, replacing DIR's classifier and state")
    p.set_defaults(run=fit, sub=p)   # errors then carry the subcommand's usage

    p = sub.add_parser("classify", help="cluster shares of kernel files, per size")
    p.add_argument("--kernels", type=_kernel_file, nargs="+", required=True, metavar="FILE")
    p.add_argument("--classifier", type=_classifier_file, nargs="+", metavar="PATH")
    p.add_argument("--csv", metavar="FILE", help="also write one row per kernel here")
    p.set_defaults(run=classify, sub=p)   # errors then carry the subcommand's usage

    p = sub.add_parser("profile", help="per-layer family mixes of a trained model, for dog_init_(mix=profile)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=_source, metavar="SOURCE", help=SOURCE_HELP)
    src.add_argument("--kernels", type=_kernel_file, nargs="+", metavar="FILE", help="kernel arrays (.npy/.npz)")
    p.add_argument("--checkpoint", type=_existing_file, metavar="FILE", help="weights for --model timm:NAME")
    p.add_argument("--classifier", type=_classifier_file, nargs="+", metavar="PATH",
                   help="classifier_k*.safetensors per size (default: the bundled ones)")
    p.add_argument("--out", required=True, metavar="FILE.json", help="profile to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(run=profile, sub=p)
    return parser


def main(argv=None) -> int:
    """Run one subcommand; exit status 0, 1 (e.g. weights not downloadable), 2 (bad input) or 130 (Ctrl-C)."""
    args = None
    try:
        with _finaliser_interrupts_resent():
            args = build_parser().parse_args(argv)
            return _run(args)
    except KeyboardInterrupt:
        print(f"python -m analysis: {_interrupted(args)}", file=sys.stderr)
        return 130


def _run(args) -> int:
    sub = args.sub
    if getattr(args, "synthetic", 0) < 0:
        sub.error(f"--synthetic must be >= 0, got {args.synthetic}")
    try:
        args.run(args, sub)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, KeyError) as err:
        sub.error(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))
    except RuntimeError as err:      # e.g. pretrained weights not downloadable: the input was fine
        print(f"{sub.prog}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

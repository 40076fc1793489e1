"""``python -m analysis fit``: train a classifier for one kernel size and save it, leaving nothing behind on failure.

Order of work: every option, the device and the output folder are checked first; then the kernels are loaded and
must hold enough distinct shapes (10 for the autoencoder, ``--n-classes`` for k-means; 50 copies of one kernel are one
shape); only then is the output folder created. If anything fails before training has saved a resumable state, or
the trained classifier names no family at all (every interval "other"), the files and folders this run created are
removed again. A run interrupted during training keeps ``fit_state.pt`` for ``--resume``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from dog_init.files import atomic_path, check_output_file

__all__ = ["run_fit"]


class _NoFamily(ValueError):
    """The trained classifier names no family: refuse it, and drop its training state too."""


def _check_device(name: str, parser) -> None:
    import torch
    try:
        device = torch.device(name) if name != "auto" else None
    except RuntimeError as err:
        parser.error(f"--device {name!r} is not a device ({err}); use auto, cpu or cuda")
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name!r}: no CUDA device is available here; use --device cpu (or auto)")
    if device is not None and device.type not in ("cpu", "cuda"):
        parser.error(f"--device {name!r}: only cpu and cuda are supported; use auto, cpu or cuda")


def _distinct_shapes(kernels: np.ndarray) -> int:
    """Kernels that differ after centring and unit-normalising (what the classifiers see), to 5 decimals."""
    from ..core.preprocess import to_basis
    return len(np.unique(np.round(to_basis(kernels), 5), axis=0)) if len(kernels) else 0


def run_fit(args, parser) -> None:
    from .autoencoder import AutoencoderConfig, fit_autoencoder
    from .classifier import KernelClassifier
    from ..kernels.extract import extract_depthwise
    from ..core.labels import load_intervals

    out = Path(args.out)
    target = out / f"classifier_k{args.size}.safetensors"
    try:   # a file where the --out folder should be, or no writable folder to make it in
        check_output_file(target, "--out")
    except ValueError as err:
        parser.error(str(err))
    state_path = out / "fit_state.pt"
    if target.exists() and not (args.overwrite or args.resume):
        parser.error(f"{str(target)!r} exists; pass --overwrite to replace it (or --resume to finish its run)")
    if state_path.exists() and not (args.resume or args.overwrite):
        parser.error(f"{str(state_path)!r} holds an earlier run; pass --resume to continue it or --overwrite to "
                     "start again")
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    if args.size == 3 and args.resume:
        parser.error("--resume applies to autoencoder training; 3x3 kernels are fitted with k-means in one go")
    if args.checkpoint and not (args.models and len(args.models) == 1 and args.models[0].startswith("timm:")):
        parser.error("--checkpoint needs a single --models timm:NAME")
    _check_device(args.device, parser)
    intervals = load_intervals(args.intervals) if args.intervals else None   # checked before any work

    kernels, inputs, n_real = _load(args, parser, extract_depthwise)
    needed = args.n_classes if args.size == 3 else 10
    distinct = _distinct_shapes(kernels)
    if distinct < needed:
        parser.error(f"need at least {needed} distinct {args.size}x{args.size} kernel shapes to train "
                     f"{'a k-means' if args.size == 3 else 'an autoencoder'} classifier, got {distinct} among "
                     f"{len(kernels)} kernels (copies and rescaled copies count once); add kernels or --synthetic N")
    print(f"training on {len(kernels)} {args.size}x{args.size} kernels ({n_real} from {len(inputs)} source(s), "
          f"{len(kernels) - n_real} synthetic)")
    meta = {"trained_on": {"inputs": inputs, "n_real": n_real, "synthetic_per_family": args.synthetic,
                           "n_total": len(kernels)}}

    made_folder, had = not out.exists(), set(out.iterdir()) if out.exists() else set()
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.size == 3:
            from .kmeans3 import fit_kmeans3
            clf = fit_kmeans3(kernels, n_classes=args.n_classes, seed=args.seed, threshold=args.threshold, meta=meta)
        else:
            config = AutoencoderConfig(size=args.size, widths=args.widths, lr=args.lr, batch_size=args.batch_size,
                                       epochs=args.epochs, patience=args.patience, seed=args.seed,
                                       device=args.device)
            fingerprint = {"data_sha1": hashlib.sha1(kernels.tobytes()).hexdigest(), "n": len(kernels),
                           "inputs": inputs, "synthetic_per_family": args.synthetic}
            _check_resume(out / "fit_state.json", state_path, fingerprint, args, parser)
            result = fit_autoencoder(kernels, config, state_path=state_path)
            meta["training"] = {**result.to_dict(), "history": result.history[-3:]}
            clf = KernelClassifier.from_autoencoder(result.model, threshold=args.threshold, intervals=intervals,
                                                    meta=meta)
            print(f"autoencoder: {result.epochs_run} epochs, best held-out cosine dissimilarity "
                  f"{result.best_val_loss:.4f}")
        if set(clf.names.tolist()) <= {"other"}:
            unit = "centroid" if args.size == 3 else "interval"
            raise _NoFamily(f"the trained classifier names no family: every {unit} is 'other' (no DoG family "
                            "matched), so its kernels do not span the families; add varied kernels or --synthetic N")
        clf.save(target)
    except BaseException as err:
        # Keep a resumable state (an interrupted or crashed training); remove what this run made otherwise.
        keep_state = state_path.exists() and not isinstance(err, _NoFamily)
        for path in set(out.iterdir()) - had:
            if not (keep_state and path.name in ("fit_state.pt", "fit_state.json")):
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        if made_folder and not any(out.iterdir()):
            out.rmdir()
        raise
    if intervals is not None and clf.kind == "kmeans":
        print("note: --intervals ignored for 3x3 (k-means) classifiers")
    print(f"wrote {target} and {target.with_suffix('.json')} ({clf!r})")
    if clf.kind == "autoencoder":
        print("intervals (code range -> name):")
        for iv in clf.intervals:
            print(f"  [{iv.lo:.3f}, {iv.hi:.3f})  {iv.fine}")
    else:
        print("centroids -> name: " + ", ".join(f"{i}: {f}" for i, f in enumerate(clf.fine)))


def _load(args, parser, extract_depthwise):
    """(kernels (N, k, k) float32, per-source records, number of real kernels): the non-degenerate kernels of the
    requested size from every source, then ``--synthetic`` noisy DoG kernels per family."""
    import torch
    from tqdm.auto import tqdm

    sources = args.kernels or args.models
    chunks, inputs, found = [], [], {}
    for src in tqdm(sources, desc="extracting kernels", disable=len(sources) < 2):
        ks = extract_depthwise(src, checkpoint=args.checkpoint)
        found[src] = ks.sizes
        group = ks.get(args.size)
        n = 0 if group is None else len(group)
        good = np.zeros(0, bool) if group is None else ~group.degenerate
        if n:
            chunks.append(group.kernels[good])
        label = src + (f" (checkpoint {args.checkpoint})" if args.checkpoint else "")
        inputs.append({"source": label, "n_kernels": n, "n_dropped_degenerate": int(n - good.sum()),
                       "n_used": int(good.sum())})
    if not chunks:
        listing = "; ".join(f"{s}: {', '.join(f'{k}x{k}' for k in sizes) or 'none'}" for s, sizes in found.items())
        parser.error(f"no {args.size}x{args.size} kernels in the sources (sizes found: {listing})")
    n_real = sum(len(c) for c in chunks)
    if args.synthetic:
        from ..core.labels import families_for
        from ..core.synthetic import noisy_family_kernels
        syn, _ = noisy_family_kernels(args.synthetic, args.size, families=families_for(args.size),
                                      generator=torch.Generator().manual_seed(args.seed))
        chunks.append(syn.numpy())
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32), inputs, n_real


def _check_resume(sidecar: Path, state_path: Path, fingerprint: dict, args, parser) -> None:
    """A resumed run must see the same training data; the state file only records the optimiser config."""
    if args.overwrite:
        state_path.unlink(missing_ok=True)
    elif args.resume and state_path.exists():
        old = json.loads(sidecar.read_text()) if sidecar.exists() else None
        if old is not None and old.get("data_sha1") != fingerprint["data_sha1"]:
            parser.error(f"--resume: {str(state_path)!r} was trained on different kernels ({old.get('n')} then, "
                         f"{fingerprint['n']} now); use the same inputs or --overwrite")
        print(f"resuming from {state_path}")
    elif args.resume:
        print(f"--resume: no {state_path} yet; starting a new run")
    with atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(fingerprint, indent=1))

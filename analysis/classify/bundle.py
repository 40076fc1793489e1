"""Train the classifiers shipped in ``analysis/weights`` (``make classifiers``), recording exactly what went in.

Material per kernel size, all available offline:

* synthetic: ``synthetic.noisy_family_kernels`` (every DoG family, noise up to half the kernel's norm, random gain and
  offset); second derivatives are drawn twice as often because they have 6 subtypes to the others' 1-4;
* real: the trained depthwise kernels (the only material of the 3x3 k-means, as in the paper) in
  ``../shared/data/kernels`` (EfficientNet-Lite0, MCUNet, the 8 ConvNeXtV2 master-key filters), each augmented by
  the 8 symmetries of the square and by negation, since every cluster's rotations, reflections and opposite sign are
  clusters too (Sec. 4). The deepest quarter of EfficientNet-Lite0's rows is held out of training and reported
  separately, as a check on kernels the classifier has not seen. No trained 9x9 to 13x13 kernels are available
  offline, so those classifiers take the real 5x5 and 7x7 kernels zero-padded into the centre of their frame
  (``embed``): trained large kernels keep their structure in a small central area (Appendix I).

The untrained MCUNet kernels are the negative control: never trained on, reported as the clustered share of noise.
Every figure this module measures is stored under ``"evaluation"`` in the classifier's JSON.
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .autoencoder import AutoencoderConfig, fit_autoencoder
from .classifier import KernelClassifier
from .kmeans3 import fit_kmeans3
from ..core.labels import families_for
from dog_init import SQUARE_CORNERS, sample
from dog_init.families import AxisAngle, Uniform
from ..core.preprocess import degenerate
from ..core.symmetry import symmetry_changes
from ..core.synthetic import CROSS_REACH, noisy_family_kernels

__all__ = ["BundleConfig", "REAL_KERNELS", "held_out_start", "build_classifier", "evaluate", "dihedral",
           "shared_kernels_dir", "relabel"]

_REAL_5 = ("effnet-lite0_k5.npy", "mcunet-vww_k5.npy", "mcunet-training-demo-int8_k5.npy")
_REAL_7 = ("mcunet-vww_k7.npy", "mcunet-training-demo-int8_k7.npy", "master-key-filters_k7.npy")
REAL_KERNELS = {3: ("effnet-lite0_k3.npy", "mcunet-detection_k3.npy"), 5: _REAL_5, 7: _REAL_7,
                **{k: _REAL_5 + _REAL_7 for k in (9, 11, 13)}}   # k >= 9: embedded (zero-padded) into k x k
HELD_OUT_TAIL = {"effnet-lite0_k3.npy": 0.25, "effnet-lite0_k5.npy": 0.25}   # share of rows, from the end


def held_out_start(name: str, rows: int) -> int:
    """First row of ``name``'s held-out tail (``rows`` if nothing of it is held out)."""
    return rows - int(rows * HELD_OUT_TAIL.get(name, 0.0))
NEGATIVE_CONTROL = "untrained-mcunetv2-large_k{k}.npy"
PADDED_CHECK = "effnet-lite0_k5.npy"   # its held-out rows, zero-padded, test a large classifier (``evaluate``)


def embed(kernels: np.ndarray, size: int) -> np.ndarray:
    """Kernels (N, k, k) zero-padded into the centre of ``size`` x ``size`` frames (k <= size, both odd)."""
    pad = (size - kernels.shape[-1]) // 2
    if pad < 0 or (size - kernels.shape[-1]) % 2:
        raise ValueError(f"cannot embed {kernels.shape[-1]}x{kernels.shape[-1]} kernels in a {size}x{size} frame")
    return np.pad(kernels, ((0, 0), (pad, pad), (pad, pad))) if pad else kernels


def load_real(name: str, size: int, folder: Path) -> np.ndarray:
    """The real kernels of ``folder / name``, embedded in ``size`` x ``size`` frames where they are smaller."""
    return embed(np.load(folder / name), size)
WEIGHTS_DIR = Path(__file__).parents[1] / "weights"


def shared_kernels_dir() -> Path:
    """``$DOG_INIT_SHARED_DATA/kernels``, default ``../shared/data/kernels`` from the repository root."""
    root = os.environ.get("DOG_INIT_SHARED_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    return Path(root) / "kernels"


# Per autoencoder size: epochs, early-stopping patience, and how often each augmented real kernel is seen per epoch
# (5x5 nets have 7x more real kernels to place on the curve, and the held-out EfficientNet check is a 5x5 one).
# From 9x9 on an epoch holds ~190,000 kernels (the embedded 5x5 and 7x7 ones), 3x the 7x7's: fewer, longer epochs.
SIZE_DEFAULTS = {5: {"epochs": 120, "real_repeats": 3, "patience": 20},
                 7: {"epochs": 150, "real_repeats": 1, "patience": 10},
                 **{k: {"epochs": 40, "real_repeats": 1, "patience": 6} for k in (9, 11, 13)}}


@dataclass
class BundleConfig:
    size: int
    per_subtype: int = 4000                   # synthetic kernels per subtype (``subtypes``)
    noise_range: tuple[float, float] = (0.0, 0.5)
    real_repeats: int = 2                     # how often each augmented real kernel appears per epoch
    seed: int = 0
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)

    def __post_init__(self):
        self.autoencoder.size = self.size


def dihedral(kernels: np.ndarray, negate: bool = True) -> np.ndarray:
    """The 8 rotations / reflections of each kernel, and their negatives: (16 N, k, k)."""
    rots = [np.rot90(kernels, r, axes=(1, 2)) for r in range(4)]
    out = np.concatenate(rots + [r[:, :, ::-1] for r in rots])
    return np.ascontiguousarray(np.concatenate([out, -out]) if negate else out)


def _real_parts(size: int, folder: Path) -> tuple[list[np.ndarray], list[dict]]:
    train, record = [], []
    for name in REAL_KERNELS[size]:
        arr = load_real(name, size, folder)
        stop = held_out_start(name, len(arr))
        good = arr[:stop][~degenerate(arr[:stop])]
        train.append(good)
        native = int(np.load(folder / name, mmap_mode="r").shape[-1])
        record.append({"file": name, "rows": len(arr), "trained_rows": [0, stop], "non_degenerate": len(good),
                       **({"embedded_from": native} if native < size else {})})
    return train, record


def subtypes(size: int) -> list[tuple[str, str, dict]]:
    """(fine label, family, fixed parameters) of every subtype, in the code order of the warm start: similar shapes
    sit next to each other, and the sign flips once, in the middle, like the paper's spectrum (Fig. 3)."""
    fams = families_for(size)
    deriv = [(f"first_derivative/{d}", "first_derivative", {"theta": AxisAngle(20.0, multiples=(i,))})
             for i, d in enumerate(("right", "up", "left", "down"))]
    # Centre kernels are the most common (45 % in the paper's mix): two segments each, small and large sigma.
    centre = {f: [(f, f, {"sigma": Uniform(0.45, 0.9)}), (f, f, {"sigma": Uniform(0.9, 1.6)})]
              for f in ("on_centre", "off_centre")}
    second = {sign: [(f"second_derivative/{kind}{sign}", "second_derivative", {"kind": kind, "sign": value})
                     for kind in ("uu", "vv", "uv")] for sign, value in (("+", 1.0), ("-", -1.0))}
    squares = {on: [(f"{on}/{c}", on, {"corner": c}) for c in SQUARE_CORNERS] if on in fams else []
               for on in ("on_square", "off_square")}
    # From 13x13 on (arms up to 0.55 k > 6.5 px) long-armed crosses get a stretch of the curve of their own.
    arms = [{}] if CROSS_REACH * size <= 6.5 else [{"length": Uniform(2.2, 4.5)},
                                                   {"length": Uniform(4.5, CROSS_REACH * size)}]
    cross = {on: [(on, on, fixed) for fixed in arms] if on in fams else [] for on in ("on_cross", "off_cross")}
    return (centre["on_centre"][::-1] + squares["on_square"] + cross["on_cross"] + second["+"] + deriv
            + second["-"][::-1] + cross["off_cross"] + squares["off_square"] + centre["off_centre"])


_ORDER_BY = {"on_cross": "length", "off_cross": "length", "on_square": "half", "off_square": "half"}


def synthetic_material(size: int, per_subtype: int, noise_range, generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy kernels of every subtype and their warm-start code targets: subtype i fills the i-th equal slice of
    [0, 1], ordered inside it by scale (sigma, arm length or block size)."""
    subs = subtypes(size)
    kernels, targets = [], []
    for i, (_, family, fixed) in enumerate(subs):
        fixed = {name: value.draw(per_subtype, generator) if hasattr(value, "draw") else value
                 for name, value in fixed.items()}
        k, _, (params,) = noisy_family_kernels(per_subtype, size, families=(family,), noise_range=noise_range,
                                               generator=generator, fixed=fixed, return_params=True)
        rank = params[_ORDER_BY.get(family, "sigma")].argsort().argsort().numpy()
        kernels.append(k.numpy())
        targets.append((i + 0.05 + 0.9 * rank / max(per_subtype - 1, 1)) / len(subs))
    return np.concatenate(kernels), np.concatenate(targets).astype(np.float32)


def build_classifier(config: BundleConfig, folder: Path | None = None, progress: bool = True) -> KernelClassifier:
    """Train one bundled classifier (autoencoder for k >= 5, k-means for 3x3) and evaluate it."""
    folder = folder or shared_kernels_dir()
    missing = [n for n in REAL_KERNELS[config.size] if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"real kernels missing from {folder}: {missing}; set DOG_INIT_SHARED_DATA")
    generator = torch.Generator().manual_seed(config.seed)
    if config.size == 3:
        synthetic, targets = np.zeros((0, 3, 3), np.float32), np.zeros(0, np.float32)
    else:
        synthetic, targets = synthetic_material(config.size, config.per_subtype, config.noise_range, generator)
    real, record = _real_parts(config.size, folder)
    real_aug = dihedral(np.concatenate(real))
    material = np.concatenate([synthetic, real_aug]).astype(np.float32)
    n_syn = len(synthetic)
    what = {"synthetic": None if config.size == 3 else {
                "per_subtype": config.per_subtype, "subtypes": [s[0] for s in subtypes(config.size)],
                "parameter_ranges": "analysis.core.synthetic.WIDE_PARAMS", "noise_range": list(config.noise_range),
                "kernels": n_syn, "seed": config.seed},
            "real": record, "real_augmentation": "8 dihedral symmetries x {+1, -1}",
            "real_kernels_after_augmentation": len(real_aug), "real_repeats": config.real_repeats}
    started = time.time()
    if config.size == 3:   # the paper's k-means runs on trained kernels only
        clf = fit_kmeans3(real_aug, seed=config.seed, meta={"trained_on": what})
    else:
        index = np.concatenate([np.arange(n_syn)] + [np.arange(n_syn, len(material))] * config.real_repeats)
        code_targets = np.concatenate([targets, np.full(len(real_aug), np.nan, np.float32)])
        fit = fit_autoencoder(material, config.autoencoder, index=index, code_targets=code_targets,
                              progress=progress)
        clf = KernelClassifier.from_autoencoder(fit.model, meta={"trained_on": what, "training": fit.to_dict()})
    clf.meta["train_seconds"] = round(time.time() - started, 1)
    clf.meta["evaluation"] = evaluate(clf, folder)
    return clf


def evaluate(clf: KernelClassifier, folder: Path | None = None, seed: int = 12345) -> dict:
    """Coarse accuracy on fresh synthetic kernels, clustered share of noise, negative control and real kernels."""
    folder = folder or shared_kernels_dir()
    k, generator = clf.size, torch.Generator().manual_seed(seed)
    test, names = noisy_family_kernels(500, k, families=families_for(k), generator=generator)
    result = clf.classify(test)
    names = np.array(names)
    out = {"synthetic_accuracy": float((result.labels == names).mean()),
           "synthetic_accuracy_by_family": {f: float((result.labels[names == f] == f).mean())
                                            for f in families_for(k)},
           "synthetic_clustered": result.clustered_share(),
           "dog_init_sampler_accuracy": _sampler_accuracy(clf, generator),
           "gaussian_noise_clustered": clf.classify(
               np.random.default_rng(seed).standard_normal((5000, k, k)).astype(np.float32)).clustered_share()}
    control = folder / NEGATIVE_CONTROL.format(k=k)
    if control.is_file():
        out["untrained_clustered"] = clf.classify(np.load(control)).clustered_share()
    elif k > 7 and (folder / NEGATIVE_CONTROL.format(k=7)).is_file():
        out["untrained_k7_embedded_clustered"] = clf.classify(
            load_real(NEGATIVE_CONTROL.format(k=7), k, folder)).clustered_share()
    if k > 5 and (folder / PADDED_CHECK).is_file():
        out["embedded_5x5_held_out"] = embedded_agreement(clf, folder)
    # Issue 7: how often a rotation, reflection or negation changes a clustered kernel's coarse label (on <-> off
    # swapped under negation) or its clustered status, on the real kernels and on the fresh synthetic ones.
    out["symmetry"] = {"real": symmetry_changes(clf.classify, np.concatenate([load_real(n, k, folder)
                                                                            for n in REAL_KERNELS[k]])),
                       "synthetic": symmetry_changes(clf.classify, test.numpy())}
    for name in REAL_KERNELS[k]:
        arr = load_real(name, k, folder)
        stop = held_out_start(name, len(arr))
        r = clf.classify(arr)
        out[name] = {"clustered": r.clustered_share(),
                     "proportions": {a: round(b, 4) for a, b in r.proportions().items() if b > 0}}
        if stop < len(arr):
            out[name]["held_out_clustered"] = r.subset(slice(stop, None)).clustered_share()
    return out


def embedded_agreement(clf: KernelClassifier, folder: Path) -> dict:
    """The held-out EfficientNet-Lite0 5x5 rows named by the bundled 5x5 classifier, then zero-padded into
    ``clf.size`` frames and named by ``clf``: the share of the ones clustered at 5x5 that keep their family (all of
    them, and without squares, which have no family above 5x5), and the share still clustered; with the central-window
    rule of ``KernelClassifier.pretrained`` and by ``clf`` alone."""
    arr = np.load(folder / PADDED_CHECK)
    arr = arr[held_out_start(PADDED_CHECK, len(arr)):]
    small = KernelClassifier.pretrained(5).classify(arr)
    framed = copy.copy(clf)   # with pretrained()'s central-window rule (classifier.CENTRAL_SHARE)
    framed.inner = [KernelClassifier.pretrained(w) for w in (5, 7)]
    own, large = copy.copy(clf), framed.classify(embed(arr, clf.size))
    own.inner = []
    alone = own.classify(embed(arr, clf.size))
    was = small.clustered
    squares = np.char.endswith(small.labels.astype(str), "_square")
    kept, kept_alone = large.labels == small.labels, alone.labels == small.labels
    share = lambda hit, rows: float(hit[rows].mean()) if rows.any() else 0.0  # noqa: E731
    return {"kernels": int(len(arr)), "clustered_at_5": int(was.sum()), "family_kept": share(kept, was),
            "family_kept_without_squares": share(kept, was & ~squares), "still_clustered": share(large.clustered, was),
            "family_kept_by_this_classifier_alone": share(kept_alone, was)}


def _sampler_accuracy(clf: KernelClassifier, generator, n: int = 3000, noise: float = 0.3) -> float:
    """Coarse accuracy on ``dog_init.sample`` kernels (the initialiser's own ranges) plus up to 30 % pixel noise."""
    kernels, names = sample(n, clf.size, {f: 1.0 for f in families_for(clf.size)}, generator=generator)
    pixel = torch.randn(kernels.shape, generator=generator)
    pixel = pixel / pixel.flatten(1).norm(dim=1).view(-1, 1, 1)
    kernels = kernels + noise * torch.rand(n, 1, 1, generator=generator) * pixel
    return float((clf.classify(kernels).labels == np.array(names)).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.classify.bundle", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(REAL_KERNELS), choices=sorted(REAL_KERNELS))
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--epochs", type=int, help="default: SIZE_DEFAULTS")
    parser.add_argument("--per-subtype", type=int, default=BundleConfig.per_subtype)
    parser.add_argument("--warmup", type=int, default=10, help="warm-up epochs on subtype code targets")
    parser.add_argument("--lr", type=float, default=AutoencoderConfig.lr)
    parser.add_argument("--anchor", type=float, default=10.0, help="weight of the subtype code anchors")
    parser.add_argument("--patience", type=int, help="default: SIZE_DEFAULTS")
    parser.add_argument("--real-repeats", type=int, help="default: SIZE_DEFAULTS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--relabel", action="store_true",
                        help="keep the autoencoders in --out, re-derive their interval names (current template bank) "
                             "and their evaluation; 3x3 k-means is refitted (seconds)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    for size in args.sizes:
        if args.relabel and size != 3:
            clf = relabel(KernelClassifier.load(args.out / f"classifier_k{size}.safetensors"))
            _print_evaluation(clf.save(args.out / f"classifier_k{size}.safetensors"), clf)
            continue
        defaults = SIZE_DEFAULTS.get(size, SIZE_DEFAULTS[7])
        epochs = args.epochs or defaults["epochs"]
        repeats = args.real_repeats or defaults["real_repeats"]
        config = BundleConfig(size, per_subtype=args.per_subtype, seed=args.seed, real_repeats=repeats,
                              autoencoder=AutoencoderConfig(size=size, epochs=epochs, seed=args.seed,
                                                            warmup_epochs=args.warmup, lr=args.lr,
                                                            anchor_weight=args.anchor,
                                                            patience=args.patience or defaults["patience"]))
        clf = build_classifier(config)
        _print_evaluation(clf.save(args.out / f"classifier_k{size}.safetensors"), clf)
    return 0


def relabel(clf: KernelClassifier, folder: Path | None = None) -> KernelClassifier:
    """The same trained autoencoder with its intervals named again from its spectrum by the current template bank
    (``labels.template_bank``), the current classification rule, and a fresh evaluation; the record of what it was
    trained on is kept. For a change of naming or rule that needs no retraining."""
    keep = {key: clf.meta[key] for key in ("trained_on", "training", "train_seconds") if key in clf.meta}
    new = KernelClassifier.from_autoencoder(clf.autoencoder, threshold=clf.threshold, n_codes=len(clf.codebook),
                                            n_spectrum=clf.meta.get("n_spectrum", 500),
                                            min_similarity=clf.meta.get("min_similarity", 0.75),
                                            meta={**keep, "relabelled": True})
    new.meta["evaluation"] = evaluate(new, folder)
    return new


def _print_evaluation(path: Path, clf: KernelClassifier) -> None:
    ev = clf.meta["evaluation"]
    print(f"{path}: synthetic accuracy {ev['synthetic_accuracy']:.3f}, noise clustered "
          f"{ev['gaussian_noise_clustered']:.4f}, untrained clustered {ev.get('untrained_clustered', 'n/a')}, "
          f"symmetry: worst label change {ev['symmetry']['real']['label_changed_max']:.4f} (real), "
          f"{ev['symmetry']['synthetic']['label_changed_max']:.4f} (synthetic)")
    if "embedded_5x5_held_out" in ev:
        e = ev["embedded_5x5_held_out"]
        print(f"  held-out 5x5 kernels embedded: family kept {e['family_kept']:.3f} "
              f"({e['family_kept_without_squares']:.3f} without squares; this autoencoder alone "
              f"{e['family_kept_by_this_classifier_alone']:.3f}) of {e['clustered_at_5']} clustered at 5x5")
    for name in REAL_KERNELS[clf.size]:
        print(f"  {name}: clustered {ev[name]['clustered']:.3f}"
              + (f" (held-out rows {ev[name]['held_out_clustered']:.3f})" if "held_out_clustered" in ev[name]
                 else ""))


if __name__ == "__main__":
    raise SystemExit(main())

"""Every kernel size (issue 16): what ``KernelClassifier.pretrained(k)`` gets right from 9x9 to 51x51.

Measures, on material the classifiers never saw (seeds other than the bundle's):

* accuracy on labelled kernels at each size, pixel noise up to 30 % of the kernel's norm: the outside generator
  (``tests/helpers/outside_kernels.py``, other closed forms), dog_init's own ranges (``dog_init.sample``, with gain
  and offset) and the wider ranges the classifiers were trained on (``analysis.core.synthetic.WIDE_PARAMS``);
  dog_init's own initial kernels (the ``paper`` mix) named as their family; the clustered share of Gaussian noise
  and of untrained (PyTorch-default) depthwise kernels;
* above 13x13, the window rule (``analysis.classify.windows``: the narrowest window holding 80 % of the kernel's
  energy) against three others: the least dissimilar of all views, only the central 13x13 crop, only the whole kernel
  area-averaged to 13x13;
* real kernels in larger frames: the held-out EfficientNet-Lite0 5x5 rows (ImageNet) and MCUNet-VWW's 7x7 kernels
  zero-padded into 9x9 and 13x13 frames, or resized by bicubic x2 (5 -> 9, 7 -> 13, grid points kept): the share of
  the ones clustered at their own size that keep their family;
* the census of an untrained and a DoG-initialised ``mixnet_s`` (3x3 to 11x11) and ``convmixer_1536_20`` (9x9).

Writes ``results.json`` and ``results.md`` into ``--out`` (one folder, replaced atomically) and a 31x31 preview grid
of dog_init's kernels. ``--quick``: a fifth of the kernels.

    python benchmarks/kernel_sizes.py [--quick] [--out docs/kernel_sizes]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run from a checkout without installing; tests/helpers holds the outside generator

from _common import machine  # noqa: E402

from analysis import KernelClassifier, extract_depthwise, take_census  # noqa: E402
from analysis.classify.bundle import embed, held_out_start, shared_kernels_dir  # noqa: E402
from analysis.core.labels import families_for  # noqa: E402
from analysis.core.synthetic import noisy_family_kernels  # noqa: E402
from analysis.kernels.timm_models import create_model  # noqa: E402
from dog_init import dog_init_, sample  # noqa: E402
from dog_init.files import atomic_folder, strict_json  # noqa: E402
from dog_init.preview import save_kernel_grid  # noqa: E402
from tests.helpers.dog_kernels import noisy_dog_kernels  # noqa: E402
from tests.helpers.outside_kernels import OUTSIDE_FAMILIES, outside_kernels  # noqa: E402

SIZES = (9, 11, 13, 15, 21, 31, 51)
RULES = {"windows (narrowest holding 80 %)": None, "least dissimilar view": "least_dissimilar",
         "central 13x13 crop": "crop", "whole kernel resampled": "resample"}


def _rule(clf: KernelClassifier, rule: str) -> KernelClassifier:
    """``clf`` (windowed) with another way of choosing its view."""
    alt = KernelClassifier.windowed(clf.base, clf.size)
    alt.inner = clf.inner
    if rule == "least_dissimilar":
        alt.meta["window_pick"] = rule
    else:
        alt.meta["windows"] = [clf.base.size] if rule == "crop" else [clf.size]
    return alt


def accuracy(clf: KernelClassifier, n: int, seed: int) -> dict:
    k, fams = clf.size, families_for(clf.size)
    ours, names = noisy_family_kernels(n, k, families=fams, noise_range=(0.0, 0.3),
                                       generator=torch.Generator().manual_seed(seed))
    theirs, labels = outside_kernels(n, k, families=[f for f in OUTSIDE_FAMILIES if f in fams], max_noise=0.3,
                                     seed=seed)
    init, init_names = sample(n * 4, k, "paper", generator=torch.Generator().manual_seed(seed + 1))
    noisy, plain_names = noisy_dog_kernels(n * len(fams), k, max_noise=0.3, seed=seed + 2)   # dog_init's ranges
    torch.manual_seed(seed)
    untrained = torch.nn.Conv2d(256, 256, k, groups=256).weight.detach()[:, 0]
    noise = np.random.default_rng(seed).standard_normal((n * 4, k, k)).astype(np.float32)
    return {"ours": float((clf.classify(ours).labels == np.array(names)).mean()),
            "dog_init_noisy": float((clf.classify(noisy).labels == plain_names).mean()),
            "outside": float((clf.classify(theirs).labels == labels).mean()),
            "dog_init_paper_mix": float((clf.classify(init).labels == np.array(init_names)).mean()),
            "noise_clustered": clf.classify(noise).clustered_share(),
            "untrained_clustered": clf.classify(untrained).clustered_share()}


def _bicubic_x2(kernels: np.ndarray) -> np.ndarray:
    k = kernels.shape[-1]
    x = torch.from_numpy(np.ascontiguousarray(kernels, np.float32)).unsqueeze(1)
    return F.interpolate(x, size=2 * k - 1, mode="bicubic", align_corners=True).squeeze(1).numpy()


def real_in_frames(folder: Path) -> dict:
    """Family kept (share of the kernels clustered at their own size) when padded or resized into larger frames."""
    out = {}
    effnet = np.load(folder / "effnet-lite0_k5.npy")
    sources = {"effnet-lite0_k5 held-out rows": effnet[held_out_start("effnet-lite0_k5.npy", len(effnet)):],
               "mcunet-vww_k7": np.load(folder / "mcunet-vww_k7.npy")}
    for name, arr in sources.items():
        k = arr.shape[-1]
        small = KernelClassifier.pretrained(k).classify(arr)
        was = small.clustered
        squares = np.char.endswith(small.labels.astype(str), "_square")
        rows = {}
        for how, size, moved in [("zero-padded", 9, embed(arr, 9)), ("zero-padded", 13, embed(arr, 13)),
                                 ("bicubic x2", 2 * k - 1, _bicubic_x2(arr))]:
            large = KernelClassifier.pretrained(size).classify(moved)
            kept = large.labels == small.labels
            rows[f"{how} {size}x{size}"] = {
                "family_kept": float(kept[was].mean()), "without_squares": float(kept[was & ~squares].mean()),
                "still_clustered": float(large.clustered[was].mean())}
        out[name] = {"kernels": int(len(arr)), "clustered_at_own_size": int(was.sum()), "frames": rows}
    return out


def model_censuses() -> dict:
    out = {}
    for name in ("mixnet_s", "convmixer_1536_20"):
        for init in ("untrained", "dog"):
            torch.manual_seed(0)
            model = create_model(name)
            if init == "dog":
                dog_init_(model, "paper", seed=0)
            census = take_census(extract_depthwise(model))
            sizes = {}
            for k, size in census.sizes.items():
                labels = size.labels
                fams, counts = np.unique(labels, return_counts=True)
                sizes[str(k)] = {"kernels": int(len(labels)), "clustered": size.result.clustered_share(),
                                 "families": {str(f): int(c) for f, c in zip(fams, counts)}}
            n_all = sum(len(size.group) for size in census.sizes.values())
            n_clustered = sum(int(size.result.clustered.sum()) for size in census.sizes.values())
            out[f"{name} {init}"] = {"sizes": sizes, "skipped": census.skipped, "kernels": n_all,
                                     "clustered": n_clustered / max(n_all, 1)}
    return out


def markdown(res: dict) -> str:
    lines = [f"Machine: {res['machine']}; {res['seconds']:.0f} s; n per family {res['n']} (seed {res['seed']}).", "",
             "| size | classifier | outside generator | dog_init ranges | wide ranges | dog_init paper mix, clean | "
             "noise clustered | untrained clustered |", "|---|---|---|---|---|---|---|---|"]
    for k, row in res["accuracy"].items():
        lines.append(f"| {k}x{k} | {row['classifier']} | {row['outside']:.3f} | {row['dog_init_noisy']:.3f} | "
                     f"{row['ours']:.3f} | {row['dog_init_paper_mix']:.3f} | {100 * row['noise_clustered']:.2f} % | "
                     f"{100 * row['untrained_clustered']:.2f} % |")
    lines += ["", "Rules above 13x13 (accuracy: outside generator / dog_init ranges; noise clustered):", "",
              "| size | " + " | ".join(RULES) + " |", "|---|" + "---|" * len(RULES)]
    for k, rules in res["rules"].items():
        lines.append(f"| {k}x{k} | " + " | ".join(f"{r['outside']:.3f} / {r['dog_init_noisy']:.3f}; "
                                                    f"{100 * r['noise_clustered']:.2f} %" for r in rules.values())
                     + " |")
    if res.get("real_in_frames"):
        lines += ["", "Real kernels in larger frames (share of the kernels clustered at their own size):", "",
                  "| kernels | frame | family kept | without squares | still clustered |", "|---|---|---|---|---|"]
        for name, row in res["real_in_frames"].items():
            for frame, r in row["frames"].items():
                lines.append(f"| {name} ({row['clustered_at_own_size']} of {row['kernels']} clustered) | {frame} | "
                             f"{r['family_kept']:.3f} | {r['without_squares']:.3f} | {r['still_clustered']:.3f} |")
    lines += ["", "Censuses (every size classified; clustered share per size):", "",
              "| model | kernels | clustered | per size |", "|---|---|---|---|"]
    for name, row in res["censuses"].items():
        per = ", ".join(f"{k}x{k}: {100 * s['clustered']:.1f} % of {s['kernels']}" for k, s in row["sizes"].items())
        lines.append(f"| {name} | {row['kernels']} | {100 * row['clustered']:.1f} % | {per} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the kernels")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "kernel_sizes")
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args(argv)
    n, start = 80 if args.quick else 400, time.time()
    res = {"machine": machine(), "n": n, "seed": args.seed, "accuracy": {}, "rules": {}}
    for k in SIZES:
        clf = KernelClassifier.pretrained(k)
        res["accuracy"][k] = {"classifier": clf.kind if clf.base is None else
                              f"13x13 windows {clf.meta['windows']}", **accuracy(clf, n, args.seed)}
        if clf.base is not None:
            res["rules"][k] = {rule: accuracy(clf if how is None else _rule(clf, how), n, args.seed)
                               for rule, how in RULES.items()}
        print(f"{k}x{k}: {res['accuracy'][k]}", flush=True)
    folder = shared_kernels_dir()
    res["real_in_frames"] = real_in_frames(folder) if (folder / "effnet-lite0_k5.npy").is_file() else None
    res["censuses"] = model_censuses()
    res["seconds"] = time.time() - start
    kernels, names = sample(48, 31, "paper", generator=torch.Generator().manual_seed(0))
    text = strict_json(res, indent=1)
    with atomic_folder(args.out, replace=True) as tmp:
        (tmp / "results.json").write_text(text)
        (tmp / "results.md").write_text(markdown(res))
        save_kernel_grid(kernels, [n.replace("_", " ") for n in names], tmp / "dog_init_k31.png", ncols=8)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One cluster census of ConvMixer-768/32 (or ``--model convmixer_1536_20``: 24,576 9x9 kernels) against one
optimiser step of the same model, extrapolated to an ImageNet epoch at batch 640 (the paper's Appendix F setting;
target: the census under 1 % of the epoch).

The census is what ``python -m train`` does after every epoch on the main process (``train.tracking``): extract the
24,576 7x7 depthwise kernels, classify them with the bundled classifier, append the census line, and log to
TensorBoard (scalars, per-layer scalars, the per-layer figure, the sample grid, the weight histograms). It is timed
in parts, on DoG-initialised kernels and on default-initialised ones (noise-like, the classifier's worst case).
The step is ConvMixer-768/32 (patch 14, 224 px) forward + backward + AdamW on this machine at a small batch,
scaled linearly to 640 images (a step does per-image work; this overstates nothing on a CPU); an epoch is
1,281,167 / 640 = 2,002 steps. The census runs on the CPU whatever trains the model, so the share is also given
against a fast GPU epoch at ``--gpu-images-per-s`` (default 5,000 images/s: 10 recent GPUs in bf16).

    python benchmarks/tracking.py --quick      # step at batch 2, one census of each kind
    python benchmarks/tracking.py              # step at batch 8, 3 censuses each
    python benchmarks/tracking.py --quick --model convmixer_1536_20
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine  # noqa: E402  (benchmarks/, beside this script)

import torch  # noqa: E402

IMAGENET, GLOBAL_BATCH, TARGET = 1_281_167, 640, 0.01
PATCH = {"convmixer_768_32": 14, "convmixer_1536_20": 7}   # timm's ImageNet patch sizes (kernels 7 and 9)


class _Main:   # the tracker's view of a one-process Accelerator
    is_main_process = True


def census_seconds(model, repeats: int) -> dict:
    """Median seconds of a census (measure + log) and of its parts."""
    from train.tracking import Tracker
    with tempfile.TemporaryDirectory() as out:
        tracker = Tracker(Path(out), _Main(), log=lambda *_: None)
        tracker.take_census(model, epoch=0, step=0)   # the first census loads the classifier
        total, measure = [], []
        for i in range(repeats):
            start = time.perf_counter()
            result = tracker.census.measure(model)
            measure.append(time.perf_counter() - start)
            start = time.perf_counter()
            tracker.take_census(model, epoch=i + 1, step=i + 1)
            total.append(time.perf_counter() - start)
        tracker.close()
    return {"total": statistics.median(total), "measure": statistics.median(measure),
            "kernels": result.record["kernels"], "clustered": result.record["clustered"]}


def step_seconds(model, batch: int, steps: int) -> float:
    from timm.optim import create_optimizer_v2
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, eps=1e-3)
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:   # the first step warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None, help="step batch on this machine (default 8; 2 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="censuses timed (default 3; 1 quick)")
    parser.add_argument("--gpu-images-per-s", type=float, default=5000.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="convmixer_768_32", choices=sorted(PATCH))
    args = parser.parse_args(argv)
    batch, repeats = args.batch or (2 if args.quick else 8), args.repeats or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    import dog_init
    from analysis.kernels.timm_models import create_model
    torch.manual_seed(0)
    model = create_model(args.model, patch_size=PATCH[args.model])
    default = census_seconds(model, repeats)
    dog_init.dog_init_(model, "paper", seed=0)
    dog = census_seconds(model, repeats)
    step = step_seconds(model, batch, 1 if args.quick else 2)
    step_640 = step * GLOBAL_BATCH / batch
    epoch = step_640 * IMAGENET / GLOBAL_BATCH
    gpu_epoch = IMAGENET / args.gpu_images_per_s
    worst = max(default["total"], dog["total"])

    print(f"{args.model}; machine: {machine()}, load average {load_average():.1f}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    for name, c in (("default init", default), ("DoG init", dog)):
        print(f"census, {name}: {c['kernels']} kernels ({100 * c['clustered']:.1f} % clustered): "
              f"{c['total']:.2f} s (extract + classify {c['measure']:.2f} s, logging {c['total'] - c['measure']:.2f} s)")
    print(f"optimiser step at batch {batch}: {step:.2f} s on this machine -> batch {GLOBAL_BATCH}: {step_640:.0f} s; "
          f"ImageNet epoch ({IMAGENET // GLOBAL_BATCH} steps): {epoch / 3600:.0f} h")
    print(f"census share of a GPU epoch at {args.gpu_images_per_s:.0f} images/s ({gpu_epoch:.0f} s): "
          f"{100 * worst / gpu_epoch:.3f} %")
    share = worst / epoch
    print(f"ratio census / ImageNet epoch at batch {GLOBAL_BATCH} (this machine's step): {share:.2e} -> "
          + ("meets" if share < TARGET else "MISSES") + f" the target < {TARGET:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

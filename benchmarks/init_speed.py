"""How long ``dog_init_`` takes on a real model, against PyTorch's own default re-init of the same convs.

The model is built once, outside the timing (timm, ``pretrained=False``). Each repeat times

* baseline: ``conv.reset_parameters()`` on every depthwise conv ``dog_init_`` would touch (PyTorch's default
  kaiming-uniform init, i.e. the cheapest possible re-initialisation of those layers), and
* dog_init_: ``dog_init_(model, mix, seed=repeat)`` on the whole model (finding the convs, sampling parameters,
  rendering the kernels, rescaling, copying them in),

and prints the median seconds of each and their ratio. Target: dog_init_ on convnext_base under 1 s on a 2-core
CPU machine (it is a one-off cost before training, so the ratio to reset_parameters() only says how much work the
closed-form rendering adds, not whether it matters).

Then, for the largest timm depthwise-separable models (convnext_xxlarge, convmixer_1536_20, efficientnet_b7), it
times dog_init_ against building the model (``timm.create_model``, which runs timm's own initialisation): the
target is a small fraction of it. The last line is the worst of those ratios.

    python benchmarks/init_speed.py                 # convnext_base, 7 repeats
    python benchmarks/init_speed.py --quick         # convnext_atto, 3 repeats (what `make bench` runs)
    python benchmarks/init_speed.py --model convmixer_768_32 --mix uniform
    python benchmarks/init_speed.py --threads 1      # on a machine other processes also load
    (--quick compares against building efficientnet_b7 only; the full run builds all three large models)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine  # noqa: E402  (benchmarks/, beside this script)

import torch  # noqa: E402

import dog_init  # noqa: E402

TARGET_S = 1.0
TARGET_MODEL = "convnext_base"
LARGEST = ("convnext_xxlarge", "convmixer_1536_20", "efficientnet_b7")
TARGET_BUILD_SHARE = 0.1   # dog_init_ should cost under a tenth of building the model


def build(name: str) -> torch.nn.Module:
    import timm

    return timm.create_model(name, pretrained=False)


def time_call(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``fn(i)`` for ``repeats`` calls, after ``warmup`` untimed calls."""
    for i in range(warmup):
        fn(-1 - i)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=f"Target: dog_init_ on {TARGET_MODEL} < {TARGET_S:g} s on a 2-core CPU.")
    parser.add_argument("--model", default=None,
                        help=f"timm model name (default {TARGET_MODEL}; convnext_atto with --quick)")
    parser.add_argument("--mix", default="paper", help="mix preset for dog_init_ (default paper)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 7; 3 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a small model, for CI / make bench")
    args = parser.parse_args(argv)
    model_name = args.model or ("convnext_atto" if args.quick else TARGET_MODEL)
    repeats = args.repeats or (3 if args.quick else 7)
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, got {repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = build(model_name)
    build_s = time.perf_counter() - t0
    convs, _ = dog_init.find_depthwise(model)
    if not convs:
        parser.error(f"{model_name} has no depthwise convs to initialise")
    kernels = sum(conv.out_channels for _, conv in convs)
    sizes = sorted({conv.kernel_size[0] for _, conv in convs})

    def baseline(_):
        with torch.no_grad():
            for _, conv in convs:
                conv.reset_parameters()

    def dog(i):
        dog_init.dog_init_(model, args.mix, seed=max(i, 0))

    base_times = time_call(baseline, repeats)
    dog_times = time_call(dog, repeats)
    base, dog_s = statistics.median(base_times), statistics.median(dog_times)

    load = load_average()
    print(f"machine: {machine()}, load average {load:.1f}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if load > (os.cpu_count() or 1) - 0.5 and torch.get_num_threads() > 1:
        print("warning: the machine is busy; torch's OpenMP threads then wait on each other and elementwise work "
              "slows down many-fold. Compare with --threads 1.")
    print(f"model: {model_name} (built in {build_s:.2f} s, not timed): {len(convs)} depthwise convs, "
          f"{kernels} kernels, sizes {sizes}; mix {args.mix}; median of {repeats} repeats")
    print(f"baseline conv.reset_parameters(): {base:.4f} s   (min {min(base_times):.4f}, max {max(base_times):.4f})")
    print(f"dog_init_:                        {dog_s:.4f} s   (min {min(dog_times):.4f}, max {max(dog_times):.4f})")
    print(f"ratio dog_init_ / baseline:       {dog_s / base:.1f}x")
    verdict = ""
    if model_name == TARGET_MODEL:
        verdict = " -> " + ("meets" if dog_s < TARGET_S else "MISSES") + " the target"
    print(f"target: dog_init_ on {TARGET_MODEL} < {TARGET_S:g} s on a 2-core machine{verdict}")
    del model, convs
    ratios = [against_build(name, args.mix) for name in (LARGEST[-1:] if args.quick else LARGEST)]
    worst = max(ratios)
    print(f"ratio dog_init_ / building the model (worst of {len(ratios)}): {worst:.3f} -> "
          + ("meets" if worst < TARGET_BUILD_SHARE else "MISSES") + f" the target < {TARGET_BUILD_SHARE:g}")
    return 0


def against_build(name: str, mix: str) -> float:
    """Seconds of ``timm.create_model(name)`` (once) and of ``dog_init_`` on it (median of 3 after a warm-up call);
    prints both, returns their ratio."""
    start = time.perf_counter()
    model = build(name)
    build_s = time.perf_counter() - start
    convs, _ = dog_init.find_depthwise(model)
    dog_s = statistics.median(time_call(lambda i: dog_init.dog_init_(model, mix, seed=max(i, 0)), 3))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{name}: {params:.0f} M parameters, {len(convs)} depthwise convs, "
          f"{sum(c.out_channels for _, c in convs)} kernels; build {build_s:.2f} s, dog_init_ {dog_s:.3f} s "
          f"({dog_s / build_s:.3f} of the build)")
    return dog_s / build_s


if __name__ == "__main__":
    sys.exit(main())

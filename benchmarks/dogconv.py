"""What learnable DoG kernels cost: a training step of ConvMixer-256/8 with ``DoGConv2d`` against plain depthwise convs.

Two copies of the same ConvMixer (timm's ``ConvMixer`` class, dim 256, depth 8, the CIFAR-10 geometry: 32 px input,
patch 2, kernel 9 unless set) are built once: the baseline with plain depthwise ``nn.Conv2d`` (``dog_init_``, seed
0), the other converted by ``convert_`` (seed 0, so both start from the same kernels). Each repeat times one
forward + backward (cross-entropy on a fixed random batch of 64) of each model, alternating which goes first, and
the script prints the medians and their ratio. ``DoGConv2d`` re-renders its kernels at every training forward; the
eval-mode forward (kernels cached) is timed too. Target: forward + backward ratio <= 1.2.

    python benchmarks/dogconv.py             # 11 repeats, eval forward too, also with residual=True
    python benchmarks/dogconv.py --quick     # 3 repeats (what `make bench` runs), about a minute
    python benchmarks/dogconv.py --threads 1 # on a machine other processes also load
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine  # noqa: E402  (benchmarks/, beside this script)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import dog_init  # noqa: E402

TARGET = 1.2


def build(kernel: int, patch: int, dim: int = 256, depth: int = 8):
    from timm.models.convmixer import ConvMixer

    torch.manual_seed(0)
    return ConvMixer(dim=dim, depth=depth, kernel_size=kernel, patch_size=patch, num_classes=10)


def step_fn(model, x, y, train: bool):
    model.train(train)

    def step():
        if train:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        else:
            with torch.no_grad():
                model(x)
    return step


def paired_medians(a, b, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median seconds of ``a()`` and ``b()``, timed in alternating order so drifting load hits both alike."""
    for _ in range(warmup):
        a(), b()
    times = {a: [], b: []}
    for i in range(repeats):
        for fn in ((a, b) if i % 2 == 0 else (b, a)):
            start = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - start)
    return statistics.median(times[a]), statistics.median(times[b])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=f"Target: forward + backward ratio <= {TARGET} on CPU.")
    parser.add_argument("--kernel", type=int, default=9, help="depthwise kernel size (default 9)")
    parser.add_argument("--patch", type=int, default=2, help="patch size (default 2: 16x16 tokens at 32 px)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 11; 3 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true",
                        help="3 repeats, no eval timing, no residual variant (make bench): about a minute")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 11)
    if args.threads:
        torch.set_num_threads(args.threads)

    plain = build(args.kernel, args.patch)
    dog_init.dog_init_(plain, "paper", seed=0)
    variants = [False] if args.quick else [True, False]   # the headline (no residual) prints last
    x = torch.randn(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(1))

    load = load_average()
    print(f"machine: {machine()}, load average {load:.1f} before the run, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: ConvMixer-256/8, kernel {args.kernel}, patch {args.patch}, batch {args.batch} x 3 x 32 x 32, "
          f"median of {repeats} alternating repeats")
    for residual in variants:
        dog = build(args.kernel, args.patch)
        dog_init.convert_(dog, "paper", seed=0, residual=residual)
        stats = dog_init.depthwise_stats(dog)
        print(f"depthwise parameters: plain {stats['dogconv_as_plain_params']:,}, "
              f"DoGConv2d{' + residual' if residual else ''} {stats['dogconv_params']:,}")
        if not args.quick:
            eval_plain, eval_dog = paired_medians(step_fn(plain, x, y, False), step_fn(dog, x, y, False), repeats)
            print(f"eval forward (kernels cached): plain {eval_plain:.3f} s, DoGConv2d {eval_dog:.3f} s, "
                  f"ratio {eval_dog / eval_plain:.2f}x")
        base, mine = paired_medians(step_fn(plain, x, y, True), step_fn(dog, x, y, True), repeats)
        ratio = mine / base
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(f"forward+backward{' (residual=True)' if residual else ''}: plain {base:.3f} s, DoGConv2d "
              f"{mine:.3f} s, ratio DoGConv2d / plain {ratio:.2f}x ({verdict} the target <= {TARGET}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

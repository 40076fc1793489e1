"""The trainer's cost: its training step against a bare PyTorch loop, and the census against an epoch.

Both loops train the same model (same weights at the start of every round), with the same timm AdamW, on the same
batches held in memory:

* bare: ``loss = cross_entropy(model(x), y); loss.backward(); opt.step(); opt.zero_grad()``;
* trainer: ``train.engine.train_one_epoch`` with the model and optimiser prepared by the trainer's own
  ``Accelerator`` (``train.trainer.make_accelerator``: precision, accumulation windows, scheduler update per step,
  loss kept on the device, progress bar, log interval), exactly what ``python -m train`` runs.

Rounds alternate (bare, trainer, bare, ...) so that a change in the machine's load hits both; the ratio is the
median trainer step over the median bare step (target <= 1.05). Then one census of the model (extract, classify,
log to TensorBoard with the per-layer figure, sample grids and histograms, as ``tracking`` does by default) is timed
and set against an epoch of ``--epoch-images`` images at the trainer's step time.

    python benchmarks/trainer.py --quick                       # ConvMixer-128/6 k7 p2, 32 px, batch 64, CPU
    python benchmarks/trainer.py                               # ConvMixer-256/8, 5 rounds
    python benchmarks/trainer.py --model convmixer_768_32 --kwargs '{"patch_size": 14}' --img 224 --batch 64 \\
        --precision bf16 --channels-last --epoch-images 1281167    # the GPU measurement of the evidence issue
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine  # noqa: E402  (benchmarks/, beside this script)

import torch  # noqa: E402

TARGET = 1.05


def _config(args):
    from train.config import Config, apply_overrides
    cfg = Config()
    apply_overrides(cfg, [("model.name", args.model), ("model.kwargs", args.kwargs), ("data.batch_size", str(args.batch)),
                          ("train.precision", args.precision), ("train.log_interval", "50"),
                          ("model.channels_last", str(args.channels_last).lower()), ("optim.lr", "0.001")])
    return cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="timm model (default convmixer_256_8; convmixer_128_6 with "
                        "--quick)")
    parser.add_argument("--kwargs", default='{"kernel_size": 7, "patch_size": 2}', help="timm kwargs, JSON")
    parser.add_argument("--img", type=int, default=32, help="image size, pixels")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="steps per round (default 12; 6 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per loop (default 5; 3 with --quick)")
    parser.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--epoch-images", type=int, default=50_000, help="images per epoch for the census share "
                        "(default CIFAR-10's 50,000)")
    parser.add_argument("--quick", action="store_true", help="small model, fewer steps: about a minute on 2 cores")
    args = parser.parse_args(argv)
    args.model = args.model or ("convmixer_128_6" if args.quick else "convmixer_256_8")
    steps, rounds = args.steps or (6 if args.quick else 12), args.rounds or (3 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)

    from train.engine import TrainState, build_loss, train_one_epoch
    from train.models import build_model
    from train.optim import build_optimizer, build_scheduler
    from train.trainer import make_accelerator
    from train.tracking import Tracker

    cfg = _config(args)
    accelerator = make_accelerator(cfg)
    # make_accelerator turns cuDNN's autotuner on for CUDA; the bare loop gets it too (it shares the process).
    torch.backends.cudnn.benchmark = torch.cuda.is_available()
    device = accelerator.device
    model, _ = build_model(cfg, num_classes=10)
    start_state = copy.deepcopy(model.state_dict())
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch, 3, args.img, args.img, generator=g).to(device, memory_format=fmt),
                torch.randint(0, 10, (args.batch,), generator=g).to(device)) for _ in range(steps)]

    bare_model = copy.deepcopy(model).to(device)
    bare_opt = build_optimizer(cfg, bare_model)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if args.precision == "bf16" else torch.float16,
                              enabled=args.precision != "no")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare_round() -> float:
        bare_model.load_state_dict(start_state)
        bare_model.train()
        sync()
        start = time.perf_counter()
        for x, y in batches:
            with autocast:
                loss = torch.nn.functional.cross_entropy(bare_model(x), y)
            loss.backward()
            bare_opt.step()
            bare_opt.zero_grad(set_to_none=True)
        sync()
        return (time.perf_counter() - start) / steps

    opt = build_optimizer(cfg, model)
    model, opt = accelerator.prepare(model, opt)
    scheduler = build_scheduler(cfg, opt, steps)
    loss_fn = build_loss(0.0, False)
    loader = [(x, y, torch.zeros((), dtype=torch.long)) for x, y in batches]

    def trainer_round() -> float:
        accelerator.unwrap_model(model).load_state_dict(start_state)
        sync()
        start = time.perf_counter()
        train_one_epoch(model, loader, opt, scheduler, loss_fn, accelerator, TrainState(), epoch=0, epochs=1,
                        log_interval=cfg.train.log_interval)
        sync()
        return (time.perf_counter() - start) / steps

    bare_round(), trainer_round()   # warm-up: allocator, kernels, autotuning
    bare, trainer = [], []
    for _ in range(rounds):
        bare.append(bare_round())
        trainer.append(trainer_round())
    b, t = statistics.median(bare), statistics.median(trainer)

    with tempfile.TemporaryDirectory() as out:
        tracker = Tracker(Path(out), accelerator, log=lambda *_: None)
        tracker.take_census(accelerator.unwrap_model(model), epoch=0, step=0)   # loads the classifiers once
        start = time.perf_counter()
        record = tracker.take_census(accelerator.unwrap_model(model), epoch=1, step=1)
        census_s = time.perf_counter() - start
        tracker.close()
    epoch_s = t * args.epoch_images / args.batch

    print(f"machine: {machine(device)}, load average {load_average():.1f}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"model: {args.model} {json.loads(args.kwargs)}, {args.img} px, batch {args.batch}, precision "
          f"{args.precision}, channels_last {args.channels_last}; {steps} steps x {rounds} alternating rounds")
    print(f"bare PyTorch step:  {1000 * b:8.1f} ms  ({args.batch / b:.0f} images/s; rounds "
          f"{', '.join(f'{1000 * s:.0f}' for s in bare)} ms)")
    print(f"trainer step:       {1000 * t:8.1f} ms  ({args.batch / t:.0f} images/s; rounds "
          f"{', '.join(f'{1000 * s:.0f}' for s in trainer)} ms)")
    print(f"census of {record['kernels']} kernels: {census_s:.2f} s = {100 * census_s / epoch_s:.3f} % of an epoch of "
          f"{args.epoch_images} images at the trainer's step time ({epoch_s:.0f} s)")
    ratio = t / b
    print(f"ratio trainer / bare step: {ratio:.3f} -> " + ("meets" if ratio <= TARGET else "MISSES")
          + f" the target <= {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

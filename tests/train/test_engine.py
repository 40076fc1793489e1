"""The training loop at scale: accumulation windows that end with the epoch (any loader), each update averaging
its own micro-batches, a schedule planned for the updates that really happen, and the EMA evaluated like the
model."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from train.engine import TrainState, train_one_epoch, updates_per_epoch
from train.optim import OneCycleScheduler
from tests.helpers.runs import TINY, metrics, run_train


def _batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """An unprepared loader (a list, as FFCV's is to Accelerate) of n micro-batches of 4."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, generator=g), torch.randn(4, 2, generator=g), torch.zeros((), dtype=torch.long))
            for _ in range(n)]


@pytest.mark.parametrize("batches, accumulation, updates", [(31, 3, 11), (30, 3, 10), (1251, 4, 313), (5, 1, 5)])
def test_updates_per_epoch_rounds_up(batches, accumulation, updates):
    assert updates_per_epoch(batches, accumulation) == updates


def test_one_cycle_reaches_zero_only_at_the_last_update_with_accumulation():
    """31 micro-batches an epoch, accumulation 3, 2 epochs: 11 updates an epoch (the last over 1 micro-batch),
    and the one-cycle rate reaches 0 only at the very last update."""
    torch.manual_seed(0)
    model, accelerator = nn.Linear(3, 2), Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    epochs, loader = 2, _batches(31)
    per_epoch = updates_per_epoch(len(loader), 3)
    scheduler = OneCycleScheduler(optimizer, epochs * per_epoch)
    rates = []
    optimizer.optimizer.register_step_pre_hook(lambda opt, a, k: rates.append(opt.param_groups[0]["lr"]))
    state = TrainState()
    for epoch in range(epochs):
        train_one_epoch(model, loader, optimizer, scheduler, nn.MSELoss(), accelerator, state, epoch=epoch,
                        epochs=epochs, accumulation=3, first_update=epoch * per_epoch, log_interval=1000)
    assert state.step == len(rates) == epochs * per_epoch == 22
    assert rates[-1] == 0.0 and all(rate > 0 for rate in rates[:-1])


def test_last_window_gradient_is_its_micro_batch_mean():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)   # weights stay: every gradient is taken at the start
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    loader = _batches(7)
    grads = []
    optimizer.optimizer.register_step_pre_hook(lambda opt, a, k: grads.append(model.weight.grad.clone()))
    scheduler = OneCycleScheduler(optimizer, updates_per_epoch(7, 3))
    for group in optimizer.param_groups:   # keep lr 0 whatever the schedule says
        group["lr"] = 0.0
    scheduler.base_values = [0.0]
    train_one_epoch(model, loader, optimizer, scheduler, nn.MSELoss(), accelerator, TrainState(), epoch=0, epochs=1,
                    accumulation=3, log_interval=1000)
    assert len(grads) == 3   # windows of 3, 3 and 1 micro-batches

    def mean_grad(window):
        model.zero_grad()
        sum(nn.functional.mse_loss(model(x), y) for x, y, _ in window).div(len(window)).backward()
        return model.weight.grad.clone()
    for got, window in zip(grads, (loader[0:3], loader[3:6], loader[6:7])):
        torch.testing.assert_close(got, mean_grad(window), rtol=1e-6, atol=1e-7)


def test_ema_is_evaluated_under_the_models_autocast_and_ranks_checkpoints(tmp_path):
    """EMA decay 0 copies the weights exactly: evaluated in the same bf16 autocast as the model, its loss and
    top-1 are the model's to the bit."""
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--train.precision", "bf16", "--train.ema", "true",
              "--train.ema_decay", "0", "--train.best_by", "ema", "--tracking.census", "false")
    for line in metrics(out):
        assert line["ema_eval_loss"] == line["eval_loss"] and line["ema_top1"] == line["top1"]


def test_best_by_ema_needs_an_ema(tmp_path):
    done = run_train("--config", TINY, "--output-dir", tmp_path / "r", "--train.best_by", "ema", check=False)
    assert done.returncode == 2 and "train.best_by ema needs train.ema true" in done.stderr

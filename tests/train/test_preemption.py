"""Preemption-safe training (issue 18 §2): SIGTERM / SIGUSR1 write a checkpoint at the current optimiser step and
stop (exit 143 / 0); ``train.checkpoint_every_steps`` writes mid-epoch checkpoints; ``--resume auto`` continues at the
exact batch and ends bit-identical to an uninterrupted run (CPU), whether the run was stopped by a signal or killed."""
import signal
import subprocess
import time

import pytest
import torch

from tests.helpers.runs import TINY, census, kill_job, metrics, run_train, start_train, weights

# 30 batches an epoch, with data-loader workers (per-image augmentation seeds) and a 2-step accumulation window.
LONG = ("--data.synthetic_train", "480", "--epochs", "3", "--seed", "0", "--optim.accumulation", "2")


def _same_end(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    strip = lambda lines: [{k: v for k, v in line.items() if k not in ("train_loss",)} for line in lines]  # noqa: E731
    assert strip(metrics(a)) == strip(metrics(b))
    assert [m["train_loss"] for m in metrics(a)] == pytest.approx([m["train_loss"] for m in metrics(b)], rel=1e-6)
    assert census(a) == census(b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("preempt") / "whole"
    run_train("--config", TINY, "--output-dir", out, *LONG)
    return out


def _start(out, *extra):
    return start_train("--config", TINY, "--output-dir", out, *LONG, *extra, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)


def _wait_for(proc, ready, what):
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} within 300 s"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 0)])
def test_signal_mid_epoch_checkpoints_stops_and_resumes_exactly(uninterrupted, tmp_path, signum, code):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for(proc, lambda: (out / "checkpoints" / "epoch_1").is_dir(), "epoch 1")
    time.sleep(0.3)   # into epoch 2
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    assert f"preempted: stopped by {signal.Signals(signum).name} at optimiser step" in err and "--resume auto" in err
    saved = sorted((out / "checkpoints").iterdir())
    assert not [p for p in saved if p.name.startswith(".")], "a partial checkpoint was left"
    assert not (out / "model.safetensors").exists()
    done = run_train("--config", TINY, "--output-dir", out, *LONG, "--resume", "auto")
    assert "resumed from" in done.stdout
    _same_end(uninterrupted, out)


@pytest.mark.slow
def test_sigkill_after_a_step_checkpoint_resumes_at_its_batch(uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--train.checkpoint_every_steps", "4")
    _wait_for(proc, lambda: (out / "checkpoints" / "step_20").is_dir(), "the step-20 checkpoint")   # epoch 2
    kill_job(proc)
    steps = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    # the newest only (a kill between writing one and pruning the one before can leave both)
    assert steps and len(steps) <= 2 and steps[-1] in ("step_20", "step_24") and steps[0] >= "step_16", steps
    done = run_train("--config", TINY, "--output-dir", out, *LONG, "--resume", "auto",
                     "--train.checkpoint_every_steps", "4")
    assert "resumed from" in done.stdout and "step_2" in done.stdout
    _same_end(uninterrupted, out)
    assert not list((out / "checkpoints").glob("step_*")), "an epoch checkpoint supersedes the step ones"


def test_checkpoint_every_steps_is_checked(tmp_path):
    done = run_train("--config", TINY, "--output-dir", tmp_path / "r", "--train.checkpoint_every_steps", "0",
                     check=False)
    assert done.returncode == 2 and "train.checkpoint_every_steps must be > 0 or null" in done.stderr

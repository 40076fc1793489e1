"""A run whose loss stops being finite stops with a message naming the step and the last good checkpoint, keeps that
checkpoint, writes no NaN into a checkpoint, and leaves logs that strict JSON parsers read."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.runs import TINY, run_train

# lr x 1e9 from epoch 2 on: epoch 1 trains normally and is checkpointed, epoch 2 diverges.
EXPLODES_IN_EPOCH_2 = ("--schedule.name", "step", "--schedule.decay_epochs", "1", "--schedule.decay_rate", "1e9",
                       "--schedule.per_step", "false", "--epochs", "3")


def _strict_json_lines(path) -> list[dict]:
    def refuse(constant):
        raise ValueError(f"{path.name} holds a bare {constant}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    done = run_train("--config", TINY, "--output-dir", out, *EXPLODES_IN_EPOCH_2, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "training diverged: the training loss was not finite at optimiser step" in done.stderr
    assert "(epoch 2)" in done.stderr and "epoch_1" in done.stderr and "is kept" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_1"]
    state = load_file(str(out / "checkpoints" / "epoch_1" / "model.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in state.values())
    assert not (out / "model.safetensors").exists()
    assert [m["epoch"] for m in _strict_json_lines(out / "metrics.jsonl")] == [1]
    _strict_json_lines(out / "census.jsonl")
    # The kept checkpoint resumes (and diverges again at the same step: the run is deterministic).
    again = run_train("--config", TINY, "--output-dir", out, *EXPLODES_IN_EPOCH_2, "--resume", "auto", check=False)
    step = done.stderr.split("optimiser step ")[1].split()[0]
    assert again.returncode == 1 and f"optimiser step {step} " in again.stderr


@pytest.mark.parametrize("histograms", ["true", "false"])
def test_divergence_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path, histograms):
    out = tmp_path / "run"
    done = run_train("--config", TINY, "--output-dir", out, "--optim.lr", "1e6", "--tracking.histograms",
                     histograms, "--tracking.at_steps", "[5]", check=False)
    assert done.returncode == 1 and "training diverged" in done.stderr and "No checkpoint had been written" in \
        done.stderr, done.stderr[-2000:]
    assert "histogram is empty" not in done.stderr
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").iterdir())


def test_json_logs_write_non_finite_numbers_as_null(tmp_path):
    from train.jsonl import JsonLines
    log = JsonLines(tmp_path / "m.jsonl", key=("epoch",))
    log.append({"epoch": 1, "train_loss": math.nan, "nested": {"x": math.inf}, "values": [1.0, -math.inf]})
    assert _strict_json_lines(tmp_path / "m.jsonl") == [
        {"epoch": 1, "train_loss": None, "nested": {"x": None}, "values": [1.0, None]}]

"""Interrupted runs and resumes: a run killed (SIGKILL) or with a corrupt checkpoint resumes to exactly the
uninterrupted run, Ctrl-C leaves no partial checkpoint; and a resume never destroys a run: checkpoints that do not fit
are refused with every file left as it was, a changed batch geometry is refused (or rescaled on request), one writer
at a time, and a folder without checkpoints starts again."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import TINY, census, kill_job, metrics, run_train, start_train, weights


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time (the lock file aside, which a refused run may open)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


# --- interrupted runs resume exactly ------------------------------------------------------------------------------
def _same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    assert metrics(a) == metrics(b)
    assert census(a) == census(b)


def _kill_when(out, ready, *extra):
    proc = start_train("--config", TINY, "--output-dir", out, "--seed", "0", *extra, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    kill_job(proc)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["first census line", "first checkpoint"])
def test_sigkill_and_resume_equals_an_uninterrupted_run(tiny_run, tmp_path, when):
    out = tmp_path / "run"
    if when == "first census line":
        ready = lambda: (out / "census.jsonl").is_file()  # noqa: E731
    else:
        ready = lambda: (out / "checkpoints" / "epoch_1" / "complete.json").is_file()  # noqa: E731
    _kill_when(out, ready, "--tracking.figures", "true")
    run_train("--config", TINY, "--output-dir", out, "--seed", "0", "--tracking.figures", "true", "--resume", "auto")
    _same_run(tiny_run, out)
    assert not list((out / "checkpoints").glob(".*partial*"))


def test_corrupt_checkpoint_is_skipped_with_a_warning(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    bad = out / "checkpoints" / "epoch_2" / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    done = run_train("--config", TINY, "--output-dir", out, "--seed", "0", "--tracking.figures", "true",
                     "--resume", "auto")
    assert "epoch_2" in done.stderr and "truncated" in done.stderr and "skipping it" in done.stderr
    assert "resumed from" in done.stdout and "epoch_1" in done.stdout
    _same_run(tiny_run, out)   # epoch 2 is recomputed exactly


def test_resume_of_a_missing_checkpoint_path_is_refused(tmp_path):
    done = run_train("--config", TINY, "--output-dir", tmp_path / "r", "--resume", tmp_path / "nope", check=False)
    assert done.returncode == 2 and "is not a checkpoint folder" in done.stderr


def test_ctrl_c_leaves_no_partial_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = start_train("--config", TINY, "--output-dir", out, "--epochs", "4", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "checkpoints").is_dir() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "resume auto" in err
    assert not list((out / "checkpoints").glob(".*")), "a partial checkpoint was left"
    for folder in (out / "checkpoints").iterdir():
        assert (folder / "complete.json").is_file()

# --- a resume never destroys a run --------------------------------------------------------------------------------

@pytest.fixture
def copied_run(tiny_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    return out


@pytest.mark.parametrize("change, named", [
    (("--model.kwargs", "{dim: 48, depth: 2, kernel_size: 7, patch_size: 2}"), "size mismatch"),
    (("--model.name", "mobilenetv2_050", "--model.kwargs", "{}"), "the run trained model.name convmixer_128_6"),
])
def test_resume_with_another_model_leaves_every_file_as_it_was(copied_run, change, named):
    before = _snapshot(copied_run)
    done = run_train("--config", TINY, "--output-dir", copied_run, "--resume", "auto", *change, check=False)
    assert done.returncode == 2, done.stderr
    assert "does not fit this configuration" in done.stderr and "epoch_2" in done.stderr and named in done.stderr
    assert "nothing in" in done.stderr and "was changed" in done.stderr
    assert _snapshot(copied_run) == before


def test_resume_when_no_checkpoint_verifies_is_refused(copied_run):
    for folder in (copied_run / "checkpoints").iterdir():
        (folder / "complete.json").write_text("{}")
    before = _snapshot(copied_run)
    done = run_train("--config", TINY, "--output-dir", copied_run, "--resume", "auto", check=False)
    assert done.returncode == 2 and "no checkpoint of" in done.stderr and "can be used" in done.stderr
    assert _snapshot(copied_run) == before


@pytest.mark.parametrize("change, named", [
    (("--data.batch_size", "8"), "data.batch_size 16 -> 8"),
    (("--optim.accumulation", "2"), "optim.accumulation 1 -> 2"),
])
def test_resume_with_another_batch_geometry_is_refused_by_name(copied_run, change, named):
    before = _snapshot(copied_run)
    done = run_train("--config", TINY, "--output-dir", copied_run, "--resume", "auto", "--epochs", "3", *change,
                     check=False)
    assert done.returncode == 2 and named in done.stderr and "--rescale-schedule" in done.stderr
    assert _snapshot(copied_run) == before


def test_rescaled_resume_ends_the_schedule_where_it_should(copied_run):
    """Epochs 1-2 at batch 16 (10 updates each), epoch 3 at batch 8 (20 updates): the tiny recipe's per-update
    cosine must reach 0 exactly after the last update of epoch 3, not earlier."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    done = run_train("--config", TINY, "--output-dir", copied_run, "--resume", "auto", "--epochs", "3",
                     "--data.batch_size", "8", "--rescale-schedule", "--tracking.census", "false",
                     "--train.log_interval", "1")
    assert "resumed from" in done.stdout
    last = metrics(copied_run)[-1]
    assert (last["epoch"], last["step"], last["lr"]) == (3, 20 + 20, 0.0)
    events = EventAccumulator(str(copied_run / "tensorboard")).Reload()
    lr = {e.step: e.value for e in events.Scalars("train/lr") if e.step > 20}   # after step s: the next one's lr
    assert sorted(lr) == list(range(21, 41))
    assert all(lr[s] > 0 for s in range(21, 40)) and lr[40] == 0.0


def test_rescale_without_resume_is_an_error():
    done = run_train("--config", TINY, "--rescale-schedule", check=False)
    assert done.returncode == 2 and "--rescale-schedule needs --resume" in done.stderr


def _start(out: Path, *extra) -> subprocess.Popen:
    return start_train("--config", TINY, "--output-dir", out, *extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_writer_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    first = _start(out, "--epochs", "200")
    try:
        deadline = time.time() + 300
        while not (out / "census.jsonl").is_file() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1][-2000:]
        before = _snapshot(out)
        second = run_train("--config", TINY, "--output-dir", out, "--resume", "auto", check=False)
        assert second.returncode == 2 and "in use by another run" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert set(_snapshot(out)) >= set(before)   # the second run wrote nothing of its own
    finally:
        kill_job(first)
    # The kernel dropped the killed run's lock: resuming needs no cleaning up.
    done = run_train("--config", TINY, "--output-dir", out, "--resume", "auto", "--epochs", "1")
    assert done.returncode == 0


def test_a_folder_without_checkpoints_starts_again(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: {name: resnet18}\n")   # a run that died before its first epoch ended
    (out / "census.jsonl").write_text('{"kind": "epoch", "epoch": 0, "step": 0}\n')
    done = run_train("--config", TINY, "--output-dir", out, "--epochs", "1")
    assert "starting convmixer_128_6" in done.stdout
    assert [m["epoch"] for m in metrics(out)] == [1]


def test_resume_past_the_end_returns_the_last_metrics(tiny_run, tmp_path):
    from train.config import apply_overrides, load_recipe
    from train.trainer import fit
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    cfg = apply_overrides(load_recipe(out / "config.yaml"), [("train.output_dir", str(out))])
    record = fit(cfg, resume="auto")
    assert record == metrics(out, timing=True)[-1] and record["epoch"] == 2


def test_tensorboard_command_quotes_its_path(tmp_path):
    out = tmp_path / "a run"
    done = run_train("--config", TINY, "--output-dir", out, "--epochs", "1", "--tracking.census", "false")
    assert f"tensorboard --logdir '{out / 'tensorboard'}'" in done.stdout

"""Running ``python -m train`` (and friends) in a subprocess for the tests, and reading what a run wrote."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import DATA, ROOT

TINY = DATA / "tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def run_train(*args, module: str = "train", timeout: int = 600, check: bool = True, launcher=None, env=None):
    """``python -m <module> *args`` from the repository root (environment ``env``, default ``ENV``); returns the
    CompletedProcess."""
    cmd = [*(launcher or [sys.executable, "-m"]), module, *map(str, args)]
    done = subprocess.run(cmd, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def start_train(*args, **popen) -> subprocess.Popen:
    """``python -m train *args`` in the background, in a session of its own so that `kill_job` reaches its
    data-loader workers too."""
    return subprocess.Popen([sys.executable, "-m", "train", *map(str, args)], cwd=ROOT, env=ENV,
                            start_new_session=True, **popen)


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL a `start_train` run with every process of it, as a scheduler's preemption does (killing the trainer
    alone orphans its workers, which then hang for good on a pipe nobody reads)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:   # the run and its workers had already ended
        pass
    proc.wait()


def census(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "census.jsonl").read_text().splitlines()]


def metrics(run: Path, timing: bool = False) -> list[dict]:
    """metrics.jsonl lines; without ``timing`` the wall-clock fields, which differ between runs, are dropped."""
    drop = set() if timing else {"images_per_s", "train_seconds", "epoch_seconds"}
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def weights(run: Path, name: str = "model.safetensors") -> dict:
    from safetensors.torch import load_file
    return load_file(str(Path(run) / name))

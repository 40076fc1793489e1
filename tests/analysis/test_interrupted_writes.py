"""``python -m analysis`` interrupted: runs killed outright (their partial folders are removed by the next report,
those of live writers kept) and Ctrl-C (exit 130, one line, output left as it was) in every subcommand.

The reports use the bundled 5x5 classifier (analysis/weights) on small state dicts written here.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import analysis.__main__ as cli
from tests.helpers import ROOT
from tests.helpers.files import depthwise_file


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def cli_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


# --- partial folders of killed runs -------------------------------------------------------------------------------
def test_report_removes_partials_of_dead_writers_only(tmp_path, capsys):
    model = depthwise_file(tmp_path / "m.safetensors", layers=2, channels=8)
    dead, alive = tmp_path / f".rep.partial-{dead_pid()}", tmp_path / f".rep.partial-{os.getpid()}"
    others = [tmp_path / f".other.partial-{dead_pid()}", tmp_path / ".rep.old-12345", tmp_path / ".rep.partial-x"]
    for folder in (dead, alive, *others):
        folder.mkdir()
        (folder / "summary.json").write_text("{}")
    assert cli.main(["report", "--model", str(model), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    assert not dead.exists(), "the partial folder of a writer that no longer runs must be removed"
    assert alive.is_dir() and (alive / "summary.json").exists(), "a live writer's partial folder must stay"
    assert all(o.is_dir() for o in others)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".rep.partial-"))
    assert left == sorted([alive.name, ".rep.partial-x"]), left   # this run's own folder went into place
    assert dead.name in capsys.readouterr().out


# --- Ctrl-C -------------------------------------------------------------------------------------------------------
def test_ctrl_c_exits_130_and_leaves_out_as_it_was(tmp_path):
    model = depthwise_file(tmp_path / "m.safetensors", layers=16, channels=256)   # ~2 s of figures
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("earlier report")
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis", "report", "--model", str(model), "--out", str(out), "--overwrite",
         "--quiet"], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # a shell's '&' may have ignored it
    deadline = time.monotonic() + 120
    while proc.poll() is None and not any(".partial-" in p.name for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline, "the report never started writing"
        time.sleep(0.01)
    time.sleep(0.2)
    assert proc.poll() is None, "the report finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and str(out) in lines[0], stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "rep"]


@pytest.mark.parametrize("command, argv", [
    ("classify", ["classify", "--kernels", "{tmp}/k_k5.npy", "--csv", "{tmp}/k.csv"]),
    ("profile", ["profile", "--kernels", "{tmp}/k_k5.npy", "--out", "{tmp}/p.json"]),
    ("fit", ["fit", "--kernels", "{tmp}/k_k5.npy", "--size", "5", "--out", "{tmp}/clf"]),
])
def test_ctrl_c_in_every_subcommand_exits_130(command, argv, tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "k_k5.npy", np.random.default_rng(0).normal(size=(40, 5, 5)).astype(np.float32))

    def interrupted(args, parser):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, command, interrupted)
    try:
        status = cli.main([a.format(tmp=tmp_path) for a in argv])
    except KeyboardInterrupt:      # escaping it would stop the whole test session
        pytest.fail(f"KeyboardInterrupt escaped python -m analysis {command}")
    assert status == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted; nothing was written" in err and str(tmp_path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k_k5.npy"]

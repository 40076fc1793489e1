"""``python -m analysis report`` under abuse: runs killed outright (their partial folders are removed by the next run,
those of live writers kept), Ctrl-C (exit 130, one line, output left as it was) and checkpoints with NaN/inf weights
(a warning naming the source and layers, the kernels counted as degenerate, strict JSON).

The reports use the bundled 5x5 classifier (analysis/weights) on small state dicts written here.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import analysis.__main__ as cli
from analysis.report.folder import write_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models: on a busy 2-core machine intra-op threads only add seconds of spin-waiting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def depthwise_file(path: Path, layers: int, channels: int, nan: dict[int, int] | None = None) -> Path:
    """A state dict of ``layers`` 5x5 depthwise weights ``blocks.<i>.dw.weight`` (channels, 1, 5, 5), random; in
    layer i the first ``nan[i]`` kernels get a NaN (odd i: an inf instead)."""
    g = torch.Generator().manual_seed(0)
    state = {f"blocks.{i}.dw.weight": torch.randn(channels, 1, 5, 5, generator=g) for i in range(layers)}
    for i, n in (nan or {}).items():
        state[f"blocks.{i}.dw.weight"][:n, 0, 2, 2] = float("inf") if i % 2 else float("nan")
    save_file(state, str(path))
    return path


def strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"bare {constant} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def cli_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


# ------------------------------------------------------------------------------- partial folders of killed runs
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


def test_partial_folder_names_its_writer(tmp_path):
    from dog_init.files import atomic_folder
    with atomic_folder(tmp_path / "rep") as folder:
        assert folder.name.startswith(f".rep.partial-{os.getpid()}-"), folder.name


# ------------------------------------------------------------------------------------------------------ Ctrl-C
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


# ---------------------------------------------------------------------------------------------- NaN/inf weights
def test_report_warns_about_nonfinite_kernels(tmp_path, capsys):
    model = depthwise_file(tmp_path / "model.safetensors", layers=3, channels=8, nan={0: 3, 2: 2})
    out = tmp_path / "rep"
    assert cli.main(["report", "--model", str(model), "--out", str(out), "--quiet", "--fit"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in (captured.err + captured.out).splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, captured
    assert "model.safetensors" in warnings[0] and "5 depthwise kernels hold NaN/inf" in warnings[0]
    assert "blocks.0.dw" in warnings[0] and "blocks.2.dw" in warnings[0] and "blocks.1.dw" not in warnings[0]
    summary = strict_json(out / "summary.json")
    (row,) = summary["rows"]
    assert row["n_kernels"] == 24 and row["n_degenerate"] == 5
    assert all(math.isfinite(v) for v in row["shares"].values())
    assert math.isclose(sum(row["shares"].values()), 1.0, abs_tol=1e-9)


def test_summary_json_has_no_bare_nan(tmp_path):
    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": {"d": -math.inf}})
    assert strict_json(tmp_path / "s.json") == {"a": None, "b": [None, 1.5], "c": {"d": None}}

"""``python -m dog_init preview|init``: run as a real subprocess (what it writes) and in-process (every bad argument
exits 2 naming the value and writes nothing, not even a temporary file), and the bound on preview grids."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dog_init.__main__ import main as dog_init_main
from dog_init.preview import MAX_GRID_KERNELS, save_kernel_grid
from tests.helpers.dog_init_cli import assert_png, run
from tests.helpers.files import listing


# --- preview ------------------------------------------------------------------------------------------------------
def test_preview_writes_png(tmp_path):
    """preview writes a valid PNG at --out (nested folders created), and nothing else next to it."""
    out = tmp_path / "figs" / "k.png"
    result = run("preview", "--mix", "paper", "--size", "7", "--n", "16", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_png(out)
    assert [p.name for p in out.parent.iterdir()] == ["k.png"]   # no temporary file left behind
    assert str(out) in result.stdout


def test_preview_json_mix(tmp_path):
    """--mix also accepts a JSON dict of family weights."""
    out = tmp_path / "k.png"
    result = run("preview", "--mix", '{"on_square": 1, "first_derivative": 2}', "--size", "5", "--n", "9",
                 "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_png(out)


@pytest.mark.parametrize("args, bad", [
    (["--size", "6"], "got 6"),
    (["--size", "seven"], "'seven'"),
    (["--mix", "nonsense"], "nonsense"),
    (["--mix", '{"blob": 1}'], "blob"),
    (["--n", "0"], "got 0"),
    (["--out", "OUT.jpg"], "OUT.jpg"),
])
def test_preview_bad_arguments(tmp_path, args, bad):
    """A bad --size / --mix / --n / non-.png --out exits non-zero, names the value on stderr, writes no file."""
    argv = ["preview", "--n", "4", "--out", str(tmp_path / "k.png"), *args]
    if any(a.startswith("OUT") for a in args):
        argv[argv.index("OUT.jpg")] = str(tmp_path / "OUT.jpg")
        bad = str(tmp_path / "OUT.jpg")
    result = run(*argv, cwd=tmp_path)
    assert result.returncode != 0
    assert bad in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_kernel_grids_are_bounded(tmp_path):
    with pytest.raises(ValueError, match=rf"too many for one grid \(at most {MAX_GRID_KERNELS}\)"):
        save_kernel_grid(torch.zeros(MAX_GRID_KERNELS + 1, 3, 3), None, tmp_path / "g.png")
    assert listing(tmp_path) == []


# --- init ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_init_report_and_preview(tmp_path):
    """init --model convnext_atto prints the summary and writes the JSON report and the first layer's PNG."""
    report, preview = tmp_path / "r.json", tmp_path / "p.png"
    result = run("init", "--model", "convnext_atto", "--seed", "3", "--report", str(report),
                 "--preview", str(preview), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["model"] == "ConvNeXt" and data["seed"] == 3 and data["scale"] == "default"
    assert len(data["layers"]) == 12
    assert data["layers"][0]["name"] == "stages.0.blocks.0.conv_dw"
    assert data["layers"][0]["kernel_size"] == 7 and len(data["layers"][0]["families"]) == 40
    assert any(name == "stem.0" for name, _ in data["skipped"])
    assert "stages.0.blocks.0.conv_dw" in result.stdout and "12 depthwise layers" in result.stdout
    assert_png(preview)


def test_init_bad_preview_path_writes_nothing(tmp_path):
    """init with a non-.png --preview fails before building the model and writes no report."""
    result = run("init", "--model", "convnext_atto", "--report", str(tmp_path / "r.json"),
                 "--preview", str(tmp_path / "p.jpg"), cwd=tmp_path)
    assert result.returncode != 0
    assert "p.jpg" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, a folder no file can be created in")
def test_init_writes_both_outputs_or_neither(tmp_path):
    result = run("init", "--model", "convnext_atto", "--report", "r.json", "--preview", "/proc/p.png",
                          "--n", "8", cwd=tmp_path)
    assert result.returncode == 2 and "/proc/p.png" in result.stderr and "Traceback" not in result.stderr
    assert listing(tmp_path) == []


# --- bad arguments, in-process ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["init", "--model", "convnxt_atto"], "unknown timm model 'convnxt_atto'; close names: convnext_atto"),
    (["init", "--model", "convnext_atto", "--report", "taken"], "--report 'taken' is a folder"),
    (["init", "--model", "convnext_atto", "--report", "afile/r.json"], "'afile' is a file, not a folder"),
    (["init", "--model", "convnext_atto", "--preview", "x.jpg"], "--preview must be a .png file"),
    (["init", "--model", "convnext_atto", "--preview", "p.png", "--n", "-5"], "--n must be between 1 and"),
    (["init", "--model", "convnext_atto", "--report", "r.json", "--preview", "afile/p.png"], "'afile' is a file"),
    (["preview", "--out", "taken.png"], "--out 'taken.png' is a folder"),
    (["preview", "--out", "afile/k.png"], "'afile' is a file, not a folder"),
    (["preview", "--n", "100000", "--size", "3"], f"between 1 and {MAX_GRID_KERNELS}"),
    (["preview", "--n", "-5"], "--n must be between 1 and"),
])
def test_dog_init_cli_errors(tmp_path, args, needle, monkeypatch, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken.png").mkdir()
    (tmp_path / "afile").write_text("")
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:           # in-process: an uncaught error would fail the test instead
        dog_init_main(args)
    assert exc.value.code == 2 and needle in capsys.readouterr().err
    assert listing(tmp_path) == before               # in particular no r.json, no hidden temp file

"""The command line, run as a real subprocess: ``python -m dog_init preview|init``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "dog_init", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def assert_png(path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0.01   # not a blank canvas


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

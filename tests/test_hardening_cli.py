"""Issue 7, command lines and files: no input deleted (item 1), no silent fallback classifier (6), no NaN in saved
JSON (7), no temporary or half-written output on any failure (10), clear errors from ``python -m dog_init`` (11),
bounded preview grids (12). Each bad command exits 2 with a message naming the value and leaves the folder as it
was."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.__main__ import main
from analysis.classify.bundle import shared_kernels_dir
from dog_init.files import atomic_path
from dog_init.preview import MAX_GRID_KERNELS, save_kernel_grid
from dog_init.__main__ import main as dog_init_main
from test_cli import run as dog_init_cli   # python -m dog_init in a subprocess

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "analysis" / "weights"


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def exits_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def kernels(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "good_k7.npy", rng.standard_normal((40, 7, 7)).astype(np.float32))
    return tmp_path


# --- item 1: an output folder that holds an input, or the working directory ---------------------------------------
def test_report_refuses_an_output_folder_holding_its_input(kernels, capsys, monkeypatch):
    np.savez(kernels / "good.npz", layer=np.load(kernels / "good_k7.npy"))
    monkeypatch.chdir(kernels.parent)
    before = listing(kernels)
    err = exits_2(["report", "--kernels", str(kernels / "good.npz"), "--out", str(kernels), "--overwrite",
                   "--quiet"], capsys)
    assert "holds the input" in err and "good.npz" in err
    assert listing(kernels) == before


def test_report_refuses_the_working_directory(kernels, capsys, monkeypatch):
    monkeypatch.chdir(kernels)
    before = listing(kernels.parent)
    err = exits_2(["report", "--kernels", "good_k7.npy", "--out", ".", "--overwrite", "--quiet"], capsys)
    assert "working directory" in err
    assert listing(kernels.parent) == before      # in particular no ..old-* folder


def test_report_refuses_a_parent_of_the_working_directory(kernels, capsys, monkeypatch):
    inner = kernels / "sub"
    inner.mkdir()
    monkeypatch.chdir(inner)
    err = exits_2(["report", "--kernels", str(kernels / "good_k7.npy"), "--out", str(kernels.parent),
                   "--overwrite", "--quiet"], capsys)
    assert "working directory" in err and str(kernels.parent) in err
    assert (kernels / "good_k7.npy").exists() and inner.is_dir()


# --- item 6: a classifier given explicitly must fit the kernels -----------------------------------------------------
@pytest.mark.parametrize("command", ["classify", "report"])
def test_a_given_classifier_that_fits_no_size_is_an_error(kernels, capsys, command, tmp_path):
    argv = [command, "--kernels", str(kernels / "good_k7.npy"), "--classifier",
            str(WEIGHTS / "classifier_k5.safetensors")]
    argv += ["--out", str(tmp_path / "rep"), "--quiet"] if command == "report" else []
    err = exits_2(argv, capsys)
    assert "classifier_k5.safetensors" in err and "5x5" in err and "7x7" in err
    assert not (tmp_path / "rep").exists()


# --- item 7: intervals are checked, and saved metadata is valid JSON -----------------------------------------------
@pytest.mark.parametrize("bad, needle", [
    ({"lo": "nan"}, "finite"),
    ({"fine": "whatever/garbage"}, "does not belong to 'on_centre'"),
    ({"fine": "first_derivative/up"}, "does not belong to 'on_centre'"),
])
def test_fit_refuses_bad_interval_files(kernels, capsys, bad, needle):
    intervals = [{"lo": 0.0, "hi": 0.5, "name": "on_centre", "fine": "on_centre"},
                 {"lo": 0.5, "hi": 1.0, "name": "first_derivative", "fine": "first_derivative/up"}]
    intervals[0].update(bad)
    (kernels / "iv.json").write_text(json.dumps(intervals))
    before = listing(kernels)
    err = exits_2(["fit", "--kernels", str(kernels / "good_k7.npy"), "--size", "7", "--out", str(kernels / "o"),
                   "--intervals", str(kernels / "iv.json")], capsys)
    assert needle in err and listing(kernels) == before


def test_saved_metadata_never_holds_nan(tmp_path):
    from analysis import KernelClassifier
    clf = KernelClassifier.pretrained(7)
    clf.meta["evaluation"] = {"broken": float("nan"), "list": [1.0, float("inf")]}
    path = clf.save(tmp_path / "classifier_k7.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert meta["evaluation"] == {"broken": None, "list": [1.0, None]}


# --- item 10: failed writes leave nothing ---------------------------------------------------------------------------
def test_atomic_path_cleans_up_when_the_destination_is_a_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match=r"'.*taken' is a folder"):
        with atomic_path(tmp_path / "taken") as tmp:
            tmp.write_text("x")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "new" / "deeper" / "f.txt") as tmp:
            tmp.write_text("x")
            raise RuntimeError("boom")
    assert listing(tmp_path) == ["taken"]          # no temp file, no folder made for it


def test_atomic_path_cleans_up_when_the_final_move_fails(tmp_path):
    target = tmp_path / "late"
    with pytest.raises(ValueError, match="cannot be written"):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            target.mkdir()                          # a folder appears at the destination meanwhile
    assert listing(tmp_path) == ["late"]


def test_classify_csv_into_a_folder(kernels, capsys):
    (kernels / "taken").mkdir()
    before = listing(kernels)
    err = exits_2(["classify", "--kernels", str(kernels / "good_k7.npy"), "--csv", str(kernels / "taken")], capsys)
    assert "--csv" in err and "is a folder" in err and listing(kernels) == before


@pytest.mark.parametrize("case", ["too_few", "size3_too_few", "identical", "cuda"])
def test_fit_failures_leave_no_folder(kernels, capsys, case):
    rng = np.random.default_rng(1)
    data = {"too_few": rng.standard_normal((5, 7, 7)), "size3_too_few": rng.standard_normal((5, 3, 3)),
            "identical": np.repeat(rng.standard_normal((1, 7, 7)), 50, axis=0),
            "cuda": rng.standard_normal((60, 7, 7))}[case]
    np.save(kernels / "train.npy", data.astype(np.float32))
    before = listing(kernels)
    argv = ["fit", "--kernels", str(kernels / "train.npy"), "--size", "3" if case == "size3_too_few" else "7",
            "--out", str(kernels / "out" / "clf")]
    if case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        argv += ["--device", "cuda"]
    err = exits_2(argv, capsys)
    assert ("no CUDA device" if case == "cuda" else "distinct") in err
    assert listing(kernels) == before


def test_fit_refuses_a_classifier_that_names_no_family(kernels, capsys):
    # Noise kernels: the spectrum matches no DoG family anywhere, so every interval would be "other".
    np.save(kernels / "noise.npy", np.random.default_rng(2).standard_normal((300, 7, 7)).astype(np.float32))
    before = listing(kernels)
    err = exits_2(["fit", "--kernels", str(kernels / "noise.npy"), "--size", "7", "--out", str(kernels / "o"),
                   "--epochs", "2", "--widths", "16,16,8,8", "--batch-size", "64"], capsys)
    assert "names no family" in err and listing(kernels) == before


# --- items 10-12: python -m dog_init -------------------------------------------------------------------------------
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


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, a folder no file can be created in")
def test_init_writes_both_outputs_or_neither(tmp_path):
    result = dog_init_cli("init", "--model", "convnext_atto", "--report", "r.json", "--preview", "/proc/p.png",
                          "--n", "8", cwd=tmp_path)
    assert result.returncode == 2 and "/proc/p.png" in result.stderr and "Traceback" not in result.stderr
    assert listing(tmp_path) == []


def test_kernel_grids_are_bounded(tmp_path):
    with pytest.raises(ValueError, match=rf"too many for one grid \(at most {MAX_GRID_KERNELS}\)"):
        save_kernel_grid(torch.zeros(MAX_GRID_KERNELS + 1, 3, 3), None, tmp_path / "g.png")
    assert listing(tmp_path) == []


@pytest.mark.skipif(not shared_kernels_dir().is_dir(), reason="shared kernels not found")
def test_report_into_a_new_folder_beside_its_inputs_still_works(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--kernels", str(shared_kernels_dir() / "master-key-filters_k7.npy"), "--out", "rep",
                 "--quiet"]) == 0
    assert (tmp_path / "rep" / "summary.json").is_file()

"""``python -m analysis`` refuses what would lose data or mislead, exiting 2 with a message naming the value and
leaving the folder as it was: an output folder that holds its input or is (a parent of) the working directory, a
given classifier that fits no kernel size, bad interval files, a CSV path that is a folder, fits that cannot
succeed (too few or identical kernels, no CUDA device, no family named). Report, fit CLI and resume end to end:
test_report.py; Ctrl-C and killed writers: test_interrupted_writes.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.__main__ import main
from tests.helpers import ROOT
from tests.helpers.files import listing

WEIGHTS = ROOT / "analysis" / "weights"


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


# --- an output folder that holds an input, or the working directory -----------------------------------------------
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


def test_report_into_a_new_folder_beside_its_inputs_still_works(tmp_path, capsys, monkeypatch, shared_kernel):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--kernels", str(shared_kernel("master-key-filters_k7.npy")), "--out", "rep",
                 "--quiet"]) == 0
    assert (tmp_path / "rep" / "summary.json").is_file()


# --- a classifier given explicitly must fit the kernels -----------------------------------------------------------
@pytest.mark.parametrize("command", ["classify", "report"])
def test_a_given_classifier_that_fits_no_size_is_an_error(kernels, capsys, command, tmp_path):
    argv = [command, "--kernels", str(kernels / "good_k7.npy"), "--classifier",
            str(WEIGHTS / "classifier_k5.safetensors")]
    argv += ["--out", str(tmp_path / "rep"), "--quiet"] if command == "report" else []
    err = exits_2(argv, capsys)
    assert "classifier_k5.safetensors" in err and "5x5" in err and "7x7" in err
    assert not (tmp_path / "rep").exists()


# --- fit: intervals, failures -------------------------------------------------------------------------------------
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


# --- classify -----------------------------------------------------------------------------------------------------
def test_classify_csv_into_a_folder(kernels, capsys):
    (kernels / "taken").mkdir()
    before = listing(kernels)
    err = exits_2(["classify", "--kernels", str(kernels / "good_k7.npy"), "--csv", str(kernels / "taken")], capsys)
    assert "--csv" in err and "is a folder" in err and listing(kernels) == before

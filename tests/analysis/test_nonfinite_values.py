"""Non-finite numbers never reach a file as bare NaN / Infinity: checkpoints with NaN/inf weights get one warning naming
the source and layers and their kernels count as degenerate; summary.json and a classifier's metadata JSON write
them as null."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

import analysis.__main__ as cli
from analysis.report.folder import write_json
from tests.helpers.files import depthwise_file, strict_json


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


def test_saved_metadata_never_holds_nan(tmp_path, pretrained_classifier):
    clf = copy.deepcopy(pretrained_classifier(7))     # the session's classifier stays as loaded
    clf.meta["evaluation"] = {"broken": float("nan"), "list": [1.0, float("inf")]}
    path = clf.save(tmp_path / "classifier_k7.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert meta["evaluation"] == {"broken": None, "list": [1.0, None]}

"""analysis.core: the zero-sum basis and preprocessing (Section 3 of the paper), the spectrum intervals and their
files and checks, and the template labels."""
import json

import numpy as np
import pytest
import torch

from analysis import basis, from_basis, to_basis
from analysis.core.labels import Interval, check_intervals, label_codes, load_intervals, match_templates, \
    save_intervals, spectrum_intervals
from analysis.core.preprocess import centre_normalise, degenerate
from dog_init import FAMILIES, generate


# --- basis and preprocessing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_basis_is_orthonormal_and_zero_sum(k):
    b = basis(k)
    assert b.shape == (k * k, k * k - 1)
    np.testing.assert_allclose(b.T @ b, np.eye(k * k - 1), atol=1e-5)
    np.testing.assert_allclose(b.sum(axis=0), 0, atol=1e-5)


def test_to_basis_and_back_is_the_centred_unit_kernel():
    w = np.random.default_rng(0).normal(size=(50, 7, 7)).astype(np.float32) * 3 + 1
    z = to_basis(w)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(from_basis(z, 7), centre_normalise(w).reshape(-1, 7, 7), atol=1e-5)
    # Dot products of basis coordinates are centred cosines.
    c = centre_normalise(w)
    np.testing.assert_allclose(z @ z.T, c @ c.T, atol=1e-5)


def test_gain_and_offset_do_not_change_coordinates():
    w = np.random.default_rng(1).normal(size=(10, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(to_basis(3.7 * w - 2.0), to_basis(w), atol=1e-5)


def test_degenerate_kernels_map_to_zero():
    w = np.random.default_rng(2).normal(size=(5, 5, 5)).astype(np.float32)
    w[0], w[1], w[2, 0, 0] = 0.0, 4.0, np.nan
    assert degenerate(w).tolist() == [True, True, True, False, False]
    assert np.all(to_basis(w)[:3] == 0)


@pytest.mark.parametrize("bad", [np.zeros((4, 5, 4)), np.zeros((4, 4, 4)), np.zeros((4, 25)), np.zeros((2, 1, 1))])
def test_bad_shapes_are_rejected(bad):
    with pytest.raises(ValueError, match="kernels"):
        to_basis(bad)
    with pytest.raises(ValueError, match="shape|square|odd"):
        from_basis(np.zeros((2, 7)), 5)


# --- intervals ----------------------------------------------------------------------------------------------------
def test_spectrum_intervals_merge_runs_and_cover_the_unit_interval():
    codes = np.linspace(0, 1, 6)
    names = ["on_centre", "on_centre", "other", "first_derivative", "first_derivative", "first_derivative"]
    ivs = spectrum_intervals(codes, names, names)
    assert [iv.name for iv in ivs] == ["on_centre", "other", "first_derivative"]
    assert ivs[0].lo == 0 and ivs[-1].hi == 1 and ivs[0].hi == pytest.approx(0.3)
    labels, _ = label_codes(np.array([0.0, 0.29, 0.31, 0.5, 1.0]), ivs)
    assert labels.tolist() == ["on_centre", "on_centre", "other", "first_derivative", "first_derivative"]


def test_interval_files_round_trip_and_bad_files_are_named(tmp_path):
    ivs = [Interval(0.0, 0.5, "on_centre", "on_centre"), Interval(0.5, 1.0, "off_centre", "off_centre")]
    save_intervals(ivs, tmp_path / "iv.json")
    assert load_intervals(tmp_path / "iv.json") == ivs
    (tmp_path / "bad.json").write_text(json.dumps([{"lo": 0, "hi": 1, "name": "blob"}]))
    with pytest.raises(ValueError, match="blob"):
        load_intervals(tmp_path / "bad.json")
    (tmp_path / "gap.json").write_text(json.dumps([{"lo": 0, "hi": 0.4, "name": "other"},
                                                   {"lo": 0.5, "hi": 1, "name": "other"}]))
    with pytest.raises(ValueError, match="contiguous"):
        load_intervals(tmp_path / "gap.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_intervals(tmp_path / "nope.json")


@pytest.mark.parametrize("interval, needle", [
    (Interval(float("nan"), 1.0, "on_centre", "on_centre"), "finite"),
    (Interval(0.0, 1.0, "on_centre", "whatever/garbage"), "'whatever/garbage' does not belong"),
    (Interval(0.0, 1.0, "second_derivative", "second_derivative/ww+"), "allowed: second_derivative, "),
    (Interval(0.0, 1.0, "other", "on_centre"), "does not belong to 'other'"),
])
def test_check_intervals_refuses(interval, needle):
    with pytest.raises(ValueError, match=needle):
        check_intervals([interval])
    check_intervals([Interval(0.0, 1.0, "on_square", "on_square/top_left")])


# --- template labels ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [5, 7])
def test_templates_name_clean_families(k):
    for family in FAMILIES:
        if "square" in family and k > 5:
            continue
        kernels = generate(family, 40, k, generator=torch.Generator().manual_seed(3))
        names, fine, sim = match_templates(kernels)
        assert (names == family).mean() >= 0.9, family
    names, _, _ = match_templates(np.random.default_rng(0).normal(size=(200, k, k)))
    assert (names == "other").mean() > 0.9


def test_first_derivative_fine_labels_follow_theta():
    for theta, direction in [(0, "right"), (90, "up"), (180, "left"), (270, "down")]:
        _, fine, _ = match_templates(generate("first_derivative", 5, 7, theta=float(theta)))
        assert set(fine) == {f"first_derivative/{direction}"}

"""Preprocessing, autoencoder, labels, k-means and the classifier contract (Sections 3-4 of the paper)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from analysis import (LABELS, AutoencoderConfig, KernelAutoencoder, KernelClassifier, basis, fit_autoencoder,
                      fit_kmeans3, from_basis, minmax_encode, to_basis)
from analysis.core.labels import Interval, label_codes, load_intervals, match_templates, save_intervals, \
    spectrum_intervals
from analysis.core.preprocess import centre_normalise, degenerate
from analysis.core.synthetic import noisy_family_kernels
from dog_init import FAMILIES, generate


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


def test_autoencoder_has_the_paper_architecture():
    model = KernelAutoencoder(7, (64, 32, 16, 8))
    hidden = [m for m in model.encoder if isinstance(m, nn.LeakyReLU)]
    assert len(hidden) == 4 and isinstance(model.encoder[-1], nn.Sigmoid)
    assert len([m for m in model.decoder if isinstance(m, nn.LeakyReLU)]) == 4
    assert isinstance(model.decoder[-1], nn.Tanh)
    codes = model.encode(torch.randn(10, 48))
    assert codes.shape == (10,) and bool(((codes > 0) & (codes < 1)).all())
    assert model.decode(codes).shape == (10, 48)


def _toy(n=200, k=7, seed=0):
    kernels, names = noisy_family_kernels(n, k, families=("on_centre", "off_centre", "first_derivative"),
                                          noise_range=(0, 0.1), generator=torch.Generator().manual_seed(seed))
    return kernels.numpy(), np.array(names)


def test_training_reduces_loss_and_is_seeded(tmp_path):
    x, _ = _toy()
    config = AutoencoderConfig(size=7, widths=(64, 32, 16, 8), epochs=6, batch_size=64, lr=3e-3)
    a = fit_autoencoder(x, config, progress=False)
    b = fit_autoencoder(x, config, progress=False)
    assert a.history[-1]["val_loss"] < a.history[0]["val_loss"]
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


def test_training_resumes_from_its_state_file(tmp_path):
    x, _ = _toy()
    full = AutoencoderConfig(size=7, widths=(32, 16, 8, 4), epochs=4, batch_size=64, patience=100)
    straight = fit_autoencoder(x, full, progress=False)
    state = tmp_path / "state.pt"
    fit_autoencoder(x, AutoencoderConfig(**{**full.__dict__, "epochs": 2}), state_path=state, progress=False)
    assert state.exists() and not list(tmp_path.glob(".state.pt.*"))
    with pytest.raises(ValueError, match="different config"):
        fit_autoencoder(x, full, state_path=state, progress=False)   # epochs differ from the saved run
    resumed_state = tmp_path / "resume.pt"
    fit_autoencoder(x, full, state_path=resumed_state, progress=False)
    resumed = fit_autoencoder(x, full, state_path=resumed_state, progress=False)
    assert len(resumed.history) == len(straight.history) == 4
    assert resumed.history == straight.history


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


@pytest.fixture(scope="module")
def toy_classifier():
    x, names = _toy(300)
    fit = fit_autoencoder(x, AutoencoderConfig(size=7, widths=(128, 64, 32, 16), epochs=25, batch_size=64,
                                               lr=3e-3), progress=False)
    return KernelClassifier.from_autoencoder(fit.model), x, names


def test_classifier_contract(toy_classifier):
    clf, x, names = toy_classifier
    assert len(clf.codebook) == 10_000 and clf.threshold == 0.3
    r = clf.classify(torch.from_numpy(x))
    assert len(r) == len(x) and r.labels.dtype.kind == "U" and set(r.labels) <= set(LABELS)
    assert r.clustered.dtype == bool and r.codes.min() >= 0 and r.codes.max() <= 1
    np.testing.assert_array_equal(r.clustered, r.dissimilarity < clf.threshold)
    assert sum(r.proportions().values()) == pytest.approx(1.0)
    assert (r.labels[r.clustered] == names[r.clustered]).mean() > 0.8


def test_classifier_matches_brute_force(toy_classifier):
    """Symmetric: the best of every 16th code under the 16 symmetries; plain: the best of all 10,000 codes."""
    from analysis.core.symmetry import SYMMETRIES, transform
    clf, x, _ = toy_classifier
    r = clf.classify(x[:50], chunk=7)
    base = from_basis(clf.codebook[8::16], 7)
    closed = np.concatenate([to_basis(transform(base, g)) for g in SYMMETRIES])
    np.testing.assert_allclose(1 - (to_basis(x[:50]) @ closed.T).max(1), r.dissimilarity, atol=1e-5)
    plain = KernelClassifier(7, clf.codebook, clf.names, clf.fine, symmetric=False).classify(x[:50], chunk=7)
    np.testing.assert_allclose(1 - (to_basis(x[:50]) @ clf.codebook.T).max(1), plain.dissimilarity, atol=1e-5)


def test_degenerate_empty_and_bad_input(toy_classifier):
    clf, x, _ = toy_classifier
    batch = x[:4].copy()
    batch[0], batch[1, 2, 2] = 0.0, np.inf
    r = clf.classify(batch)
    assert r.labels[:2].tolist() == ["unclustered"] * 2 and r.degenerate[:2].all() and not r.clustered[:2].any()
    empty = clf.classify(np.zeros((0, 7, 7), np.float32))
    assert len(empty) == 0 and empty.proportions()["on_centre"] == 0
    for bad in (np.zeros((3, 7, 5)), np.zeros((3, 6, 6)), np.zeros((3, 5, 5))):
        with pytest.raises(ValueError, match=r"\d+x\d+|square|odd"):
            clf.classify(bad)


def test_save_load_round_trip(toy_classifier, tmp_path):
    clf, x, _ = toy_classifier
    path = clf.save(tmp_path / "classifier_k7.safetensors")
    again = KernelClassifier.load(path)
    a, b = clf.classify(x), again.classify(x)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.dissimilarity, b.dissimilarity, atol=1e-6)
    (tmp_path / "classifier_k7.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="classifier_k7"):
        KernelClassifier.load(path)
    with pytest.raises(FileNotFoundError, match="missing"):
        KernelClassifier.load(tmp_path / "missing.safetensors")


def test_kmeans_3x3_classifier(tmp_path):
    # 3x3 families overlap (a blob is a cross is a square at this size), so use the sampler's well-separated ones.
    g = torch.Generator().manual_seed(0)
    families = ("off_centre", "first_derivative", "on_square")
    kernels = torch.cat([generate(f, 150, 3, generator=g) for f in families])
    kernels = kernels + 0.03 * torch.randn(kernels.shape, generator=g)
    names = np.repeat(families, 150)
    enc = minmax_encode(kernels)
    assert enc.min() >= 0 and enc.max() <= 1
    clf = fit_kmeans3(kernels, n_classes=10)
    r = clf.classify(kernels)
    assert clf.kind == "kmeans" and len(clf.codebook) == 10 and set(r.codes[~r.degenerate]) <= set(range(10))
    assert r.clustered.mean() > 0.8
    assert (r.labels[r.clustered] == names[r.clustered]).mean() > 0.8
    assert clf.classify(np.random.default_rng(0).normal(size=(2000, 3, 3))).clustered.mean() < 0.1
    again = KernelClassifier.load(clf.save(tmp_path / "classifier_k3.safetensors"))
    np.testing.assert_array_equal(again.classify(kernels).labels, r.labels)


def test_coarse_to_fine_search_is_exact(toy_classifier):
    """The certified block search returns brute force's best score, on real shapes and on noise."""
    clf, x, _ = toy_classifier
    noise = np.random.default_rng(5).normal(size=(3000, 7, 7)).astype(np.float32)
    for data in (x, noise):
        flat = torch.from_numpy(data.reshape(len(data), -1))
        fast_index, fast = clf.index.nearest(flat, chunk=512)
        assert clf.index.work_share < 1.0
        slow_index, slow = clf.index.nearest(flat, coarse_to_fine=False)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
        # Indices may differ only between entries with the same score (neighbours on a flat stretch).
        entries = clf.index.entries
        centred = flat - flat.mean(dim=1, keepdim=True)
        centred = centred / centred.norm(dim=1, keepdim=True)
        torch.testing.assert_close((centred * entries[fast_index]).sum(1), slow, atol=1e-5, rtol=0)


def test_dihedral_augmentation_and_subtype_layout():
    from analysis.classify.bundle import dihedral, subtypes
    from analysis.core.labels import families_for
    w = np.random.default_rng(0).normal(size=(3, 5, 5)).astype(np.float32)
    aug = dihedral(w)
    assert aug.shape == (48, 5, 5)
    np.testing.assert_array_equal(aug[:3], w)
    np.testing.assert_array_equal(aug[24:27], -w)
    np.testing.assert_array_equal(aug[3:6], np.rot90(w, 1, axes=(1, 2)))
    for k in (5, 7):
        layout = subtypes(k)
        assert {family for _, family, _ in layout} == set(families_for(k))
        assert layout[0][1] == "on_centre" and layout[-1][1] == "off_centre"   # the sign flips once, as in Fig. 3

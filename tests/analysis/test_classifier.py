"""analysis.classify: the paper's autoencoder (Section 4), k-means for 3x3, the KernelClassifier contract (labels,
degenerate kernels, save / load, the coarse-to-fine search) and what ``classify`` accepts (dtypes, meta tensors, a
constant offset), and the bundle's augmentation."""
import numpy as np
import pytest
import torch
from torch import nn

from analysis import (LABELS, AutoencoderConfig, KernelAutoencoder, KernelClassifier, extract_depthwise,
                      fit_autoencoder, fit_kmeans3, from_basis, minmax_encode, to_basis)
from analysis.core.preprocess import degenerate
from analysis.core.synthetic import noisy_family_kernels
from dog_init import generate
from tests.helpers.outside_kernels import generated


# --- the autoencoder ----------------------------------------------------------------------------------------------
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


# --- the classifier contract --------------------------------------------------------------------------------------
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


# --- what classify accepts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.zeros((3, 5, 5), complex), np.zeros((3, 5, 5), bool),
                                 torch.zeros(3, 5, 5, dtype=torch.bool), torch.zeros(3, 5, 5, dtype=torch.complex64),
                                 np.array([[["a"] * 5] * 5] * 3)])
def test_classify_refuses_what_the_file_loader_refuses(bad, tmp_path, pretrained_classifier):
    with pytest.raises(ValueError, match="dtype"):
        pretrained_classifier(5).classify(bad)
    if isinstance(bad, np.ndarray):
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(ValueError, match="dtype"):
            extract_depthwise(tmp_path / "bad.npy")


def test_meta_tensors_are_refused_with_a_value_error(pretrained_classifier):
    with pytest.raises(ValueError, match="meta device"):
        pretrained_classifier(5).classify(torch.zeros(3, 5, 5, device="meta"))
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8))
    with pytest.raises(ValueError, match="meta device.*'0'"):
        extract_depthwise(model)


def test_integer_and_half_kernels_are_accepted(pretrained_classifier):
    clf = pretrained_classifier(5)
    kernels = generated(5, seed=3)[:50]
    a = clf.classify(kernels)
    np.testing.assert_array_equal(clf.classify(torch.from_numpy(kernels).double()).labels, a.labels)
    assert len(clf.classify((kernels * 1000).astype(np.int64))) == 50


def kernels_with_tiny_shapes() -> np.ndarray:
    """Kernels as real nets have them: some pruned (zero), some tiny (dead channels, |w| ~ 1e-9), most ordinary."""
    rng = np.random.default_rng(8)
    arr = rng.standard_normal((300, 5, 5))
    arr[:20] = 0.0
    arr[20:60] *= 1e-9
    return arr


@pytest.mark.parametrize("offset", [1.0, -250.0])   # in float64, these lose < 1e-4 of a 1e-9 kernel
def test_degenerate_rule_and_labels_ignore_a_constant_offset(offset, pretrained_classifier):
    clf = pretrained_classifier(5)
    arr = kernels_with_tiny_shapes()
    plain, shifted = clf.classify(arr), clf.classify(arr + offset)     # float64: the offset loses nothing
    np.testing.assert_array_equal(degenerate(arr), degenerate(arr - arr.mean(axis=(1, 2), keepdims=True)))
    np.testing.assert_array_equal(plain.degenerate, shifted.degenerate)
    assert plain.degenerate.sum() == 20
    np.testing.assert_array_equal(plain.labels, shifted.labels)
    np.testing.assert_allclose(plain.dissimilarity, shifted.dissimilarity, atol=1e-4)


def test_degenerate_count_of_real_kernels_does_not_move_with_an_offset(pretrained_classifier, shared_kernel):
    """Issue: adding 1.0 moved 13 -> 65 5x5 kernels into degenerate."""
    clf = pretrained_classifier(5)
    for name in ("effnet-lite0_k5.npy", "mcunet-training-demo-int8_k5.npy"):
        arr = np.load(shared_kernel(name)).astype(np.float64)
        assert clf.classify(arr + 1.0).degenerate.sum() == clf.classify(arr).degenerate.sum()

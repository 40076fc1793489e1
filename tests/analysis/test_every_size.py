"""Every odd kernel size from 3 to 51 (issue 16): bundled classifiers up to 13x13, the window rule above.

Material the classifiers never saw: fresh seeds of both generators (ours and tests/helpers/outside_kernels.py),
Gaussian noise, dog_init's own initial kernels, and the held-out EfficientNet-Lite0 5x5 rows in larger frames.
"""
import numpy as np
import pytest
import torch
from torch import nn

from analysis import ClassifierChoice, KernelClassifier, available_pretrained, extract_depthwise, take_census
from analysis.classify.bundle import embed, held_out_start
from analysis.classify.windows import window_sizes, window_views
from analysis.core.labels import families_for
from analysis.core.symmetry import symmetry_changes
from analysis.core.synthetic import noisy_family_kernels
from dog_init import dog_init_, sample
from tests.helpers.dog_kernels import noisy_dog_kernels
from tests.helpers.outside_kernels import OUTSIDE_FAMILIES, outside_kernels

LARGE = [9, 11, 13, 21, 31, 51]


def test_bundled_up_to_13_and_every_odd_size_above():
    assert available_pretrained() == [3, 5, 7, 9, 11, 13]
    for k in range(3, 52, 2):
        clf = KernelClassifier.pretrained(k)
        assert clf.size == k and clf.kind == ("kmeans" if k == 3 else "autoencoder" if k <= 13 else "windowed")
    for bad in (2, 4, 50, 1, 0):
        with pytest.raises(ValueError, match=rf"{bad}x{bad}.*\[3, 5, 7, 9, 11, 13\] and every odd size above 13"):
            KernelClassifier.pretrained(bad)


@pytest.mark.parametrize("k", [9, 11, 13])
def test_large_bundled_metadata_says_what_went_in(k, pretrained_classifier):
    clf = pretrained_classifier(k)
    assert clf.threshold == 0.3 and clf.symmetric and len(clf.codebook) == 10_000
    real = clf.meta["trained_on"]["real"]
    assert {r["embedded_from"] for r in real} == {5, 7}          # real 5x5 / 7x7 kernels, zero-padded
    assert set(clf.meta["trained_on"]["synthetic"]["subtypes"]) >= {"on_cross", "off_cross"}
    names = {iv.name for iv in clf.intervals} - {"other"}
    assert names <= set(families_for(k)) and not any("square" in n for n in names)   # six families, no squares
    assert len(families_for(k)) == 6


def test_window_ladder_and_views_are_centred():
    assert window_sizes(15, 13) == [13, 15] and window_sizes(31, 13) == [13, 21, 31]
    assert window_sizes(51, 13) == [13, 21, 33, 51] and window_sizes(13, 13) == [13]
    with pytest.raises(ValueError, match="odd"):
        window_sizes(14, 13)
    x = np.zeros((1, 31, 31), np.float32)
    x[0, 15, 15] = 1.0
    views = window_views(x, 13, [13, 31])
    assert views.shape == (2, 1, 13, 13) and views[0, 0, 6, 6] == 1.0
    assert views[1, 0].argmax() == 6 * 13 + 6 and 0 < views[1, 0].max() < 1     # area-averaged, still central
    np.testing.assert_allclose(views[1, 0], views[1, 0][::-1, ::-1])   # symmetric about the centre


@pytest.mark.parametrize("k", LARGE)
def test_outside_generator_accuracy_at_30_percent_noise(k, pretrained_classifier):
    clf = pretrained_classifier(k)
    kernels, labels = outside_kernels(150, k, families=[f for f in OUTSIDE_FAMILIES if f in families_for(k)],
                                      max_noise=0.3, seed=4242)
    assert (clf.classify(kernels).labels == labels).mean() >= (0.9 if k <= 13 else 0.8)


@pytest.mark.parametrize("k", LARGE)
def test_dog_init_ranges_accuracy_at_30_percent_noise_and_noise(k, pretrained_classifier):
    clf = pretrained_classifier(k)
    noisy, names = noisy_dog_kernels(900, k, max_noise=0.3)
    assert (clf.classify(noisy).labels == names).mean() >= 0.95
    noise = np.random.default_rng(k).standard_normal((3000, k, k)).astype(np.float32)
    assert clf.classify(noise).clustered_share() <= 0.02


@pytest.mark.parametrize("k", [9, 13, 31, 51])
def test_dog_init_kernels_are_named_as_their_family(k, pretrained_classifier):
    kernels, names = sample(600, k, "paper", generator=torch.Generator().manual_seed(5))
    assert (pretrained_classifier(k).classify(kernels).labels == np.array(names)).mean() >= 0.9


@pytest.mark.parametrize("k", [21, 51])
def test_windowed_rule_keeps_the_symmetry_guarantee(k, pretrained_classifier):
    clf = pretrained_classifier(k)
    kernels, _ = noisy_family_kernels(20, k, families=families_for(k), noise_range=(0.0, 0.3),
                                      generator=torch.Generator().manual_seed(3))
    changes = symmetry_changes(clf.classify, kernels.numpy())
    assert changes["n_clustered"] > 80
    assert changes["label_changed_max"] <= 0.01 and changes["status_changed_max"] <= 0.01


def test_windowed_result_type_degenerate_kernels_and_round_trip(tmp_path, pretrained_classifier):
    clf = pretrained_classifier(21)
    kernels = np.random.default_rng(0).standard_normal((5, 21, 21)).astype(np.float32)
    kernels[1] = 0.0
    kernels[2] = 3.0
    kernels[3, 5, 5] = np.nan
    kernels[4] = 0.0
    kernels[4, 0, 0] = 1.0   # every central crop is constant; the whole-kernel view is not
    res = clf.classify(kernels)
    assert res.degenerate.tolist() == [False, True, True, True, False]
    assert np.isnan(res.dissimilarity[1:4]).all() and (res.symmetry[1:4] == -1).all()
    assert set(res.labels[1:4]) == {"unclustered"} and len(res) == 5 and res.subset([0, 4]).labels.shape == (2,)
    path = clf.save(tmp_path / "classifier_k21.safetensors")
    again = KernelClassifier.load(path)
    assert again.kind == "windowed" and again.meta["windows"] == [13, 21] and "windows" in again.meta["rule"]
    np.testing.assert_array_equal(again.classify(kernels).labels, res.labels)
    with pytest.raises(ValueError, match="takes 21x21 kernels, got 13x13"):
        clf.classify(np.zeros((2, 13, 13), np.float32))


@pytest.mark.parametrize("k", [9, 13])
def test_real_5x5_kernels_keep_their_family_in_larger_frames(k, pretrained_classifier, shared_kernel):
    arr = np.load(shared_kernel("effnet-lite0_k5.npy"))
    arr = arr[held_out_start("effnet-lite0_k5.npy", len(arr)):]     # rows no classifier was trained on
    small = pretrained_classifier(5).classify(arr)
    large = pretrained_classifier(k).classify(embed(arr, k))
    assert (large.labels == small.labels)[small.clustered].mean() >= 0.8


def _mixed_sizes() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Conv2d(8, 8, k, padding="same", groups=8) for k in (3, 9, 4, 31, 9)))
    dog_init_(model, "paper", seed=0)
    return model


def test_census_covers_every_odd_size_and_skips_even_ones_once():
    logged = []
    choice = ClassifierChoice(log=logged.append)
    census = take_census(extract_depthwise(_mixed_sizes()), choice)
    assert list(census.sizes) == [3, 9, 31]
    assert [(s["size"], s["n_kernels"]) for s in census.skipped] == [(4, 8)]
    take_census(extract_depthwise(_mixed_sizes()), choice)
    assert len(logged) == 1 and "4x4" in logged[0]
    assert [layer.kernel_size for layer in census.layers] == [3, 9, 31, 9]


def test_trainer_census_records_each_size_and_the_total():
    from train.census import Census
    record = Census(log=lambda message: None).measure(_mixed_sizes()).record
    assert set(record["sizes"]) == {"3", "9", "31"} and record["sizes"]["9"]["kernels"] == 16
    assert record["kernels"] == 32 and record["skipped_sizes"] == {"4": 8}
    total = sum(s["clustered"] * s["kernels"] for s in record["sizes"].values()) / record["kernels"]
    assert record["clustered"] == pytest.approx(total)
    assert record["sizes"]["9"]["clustered"] >= 0.9 and record["sizes"]["31"]["clustered"] >= 0.9


@pytest.mark.slow
def test_every_size_of_mixnet_s_is_classified():
    from analysis.kernels.timm_models import create_model
    torch.manual_seed(0)
    model = create_model("mixnet_s")
    dog_init_(model, "paper", seed=0)
    census = take_census(extract_depthwise(model))
    assert list(census.sizes) == [3, 5, 7, 9, 11] and not census.skipped
    # DoG kernels are named as such at every size from 5x5 (3x3 has 9 pixels: the paper's k-means view of them)
    assert all(census.sizes[k].result.clustered_share() >= 0.95 for k in (5, 7, 9, 11))
    named = set(np.unique(np.concatenate([census.sizes[k].labels for k in (9, 11)])))
    assert named <= set(families_for(9)) | {"unclustered"} and "on_square" not in named

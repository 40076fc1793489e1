"""The classifiers bundled in analysis/weights: present, offline, and as good as their JSON says.

Each check uses material the classifiers never saw: fresh seeds of dog_init's own sampler, Gaussian noise, kernels
from another generator (tests/helpers/outside_kernels.py), and, where the shared data is present (the
``shared_kernel`` fixture), the untrained negative control and the held-out EfficientNet-Lite0 rows.
"""
from pathlib import Path

import numpy as np
import pytest

from analysis import KernelClassifier, available_pretrained
from analysis.classify.bundle import held_out_start
from analysis.core.labels import families_for
from tests.helpers.dog_kernels import noisy_dog_kernels
from tests.helpers.outside_kernels import OUTSIDE_FAMILIES, outside_kernels


@pytest.fixture(scope="module", params=[3, 5, 7, 9, 11, 13])
def clf(request, pretrained_classifier):
    return pretrained_classifier(request.param)


def test_bundled_sizes_and_metadata(clf):
    assert available_pretrained() == [3, 5, 7, 9, 11, 13]
    assert clf.meta["format"] == "dog-init-classifier" and clf.meta["trained_on"]["real"]
    assert clf.kind == ("kmeans" if clf.size == 3 else "autoencoder")
    assert clf.threshold == {3: 0.1, 5: 0.2}.get(clf.size, 0.3) and clf.symmetric
    if clf.kind == "autoencoder":
        assert len(clf.codebook) == 10_000 and len(clf.intervals) >= 6


def test_unavailable_size_names_the_available_ones():
    with pytest.raises(ValueError, match=r"8x8.*\[3, 5, 7, 9, 11, 13\] and every odd size above 13.*fit"):
        KernelClassifier.pretrained(8)


def test_random_kernels_are_not_clustered(clf):
    noise = np.random.default_rng(2024).standard_normal((5000, clf.size, clf.size)).astype(np.float32)
    assert clf.classify(noise).clustered_share() <= 0.02


@pytest.mark.parametrize("size", [5, 7])
def test_coarse_family_accuracy_on_fresh_noisy_dog_kernels(size, pretrained_classifier):
    noisy, names = noisy_dog_kernels(2000, size, max_noise=0.25)
    assert (pretrained_classifier(size).classify(noisy).labels == names).mean() >= 0.9


@pytest.mark.parametrize("size", [3, 5, 7])
def test_untrained_negative_control_is_not_clustered(size, pretrained_classifier, shared_kernel):
    clf = pretrained_classifier(size)
    assert clf.classify(np.load(shared_kernel(f"untrained-mcunetv2-large_k{size}.npy"))).clustered_share() <= 0.02


def test_efficientnet_5x5_kernels_are_clustered_like_the_paper(pretrained_classifier, shared_kernel):
    """Paper, Appendix L: 61.08 % of EfficientNet-Lite0's kernels clustered. The deepest quarter of its rows was
    never trained on (and deep layers are the least DoG-like, Fig. 7): at least 55 % of it must be clustered."""
    arr = np.load(shared_kernel("effnet-lite0_k5.npy"))
    result = pretrained_classifier(5).classify(arr)
    held_out = result.subset(slice(held_out_start("effnet-lite0_k5.npy", len(arr)), None))
    assert result.clustered_share() >= 0.6
    assert held_out.clustered_share() >= 0.55


def test_master_key_filters_and_their_negatives(pretrained_classifier, shared_kernel):
    """Lindeberg, Babaiee and Kiasari's 8 ConvNeXtV2 filters: 6 derivatives, an on-centre, a cross/centre."""
    clf = pretrained_classifier(7)
    keys = np.load(shared_kernel("master-key-filters_k7.npy"))
    pos, neg = clf.classify(keys), clf.classify(-keys)
    assert pos.clustered.all() and neg.clustered.all()
    assert set(pos.labels[:6]) == {"first_derivative"} and set(neg.labels[:6]) == {"first_derivative"}
    assert pos.labels[6] == "on_centre" and neg.labels[6] == "off_centre"
    assert pos.labels[7] in {"on_centre", "on_cross"} and neg.labels[7] in {"off_centre", "off_cross"}



# --- kernels from another generator, and real kernels -------------------------------------------------------------
@pytest.mark.parametrize("size, target", [(5, 0.92), (7, 0.95)])
def test_outside_generator_kernels_are_named_right(size, target, pretrained_classifier):
    families = [f for f in OUTSIDE_FAMILIES if f in families_for(size)]
    kernels, labels = outside_kernels(250, size, families=families, seed=2024, max_noise=0.3)
    result = pretrained_classifier(size).classify(kernels)
    assert (result.labels == labels).mean() >= target
    for family in families:   # no family carried by the others
        assert (result.labels[labels == family] == family).mean() >= 0.85, family


def test_real_imagenet_5x5_kernels_stay_clustered(pretrained_classifier, shared_kernel):
    """Item 9 must not cost the real kernels: EfficientNet-Lite0 5x5 was 70.8 % clustered before it."""
    assert pretrained_classifier(5).classify(np.load(shared_kernel("effnet-lite0_k5.npy"))).clustered_share() >= 0.708



def test_weights_are_inside_the_package():
    import analysis
    folder = Path(analysis.__file__).parent / "weights"
    for size in (3, 5, 7):
        assert (folder / f"classifier_k{size}.safetensors").stat().st_size > 0
        assert (folder / f"classifier_k{size}.json").is_file()

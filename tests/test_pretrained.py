"""The classifiers bundled in analysis/weights: present, offline, and as good as their JSON says.

Each check uses material the classifiers never saw: fresh seeds of dog_init's own sampler, Gaussian noise, and, where
../shared/data is present, the untrained negative control and the held-out EfficientNet-Lite0 rows.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import KernelClassifier, available_pretrained
from analysis.classify.bundle import held_out_start, shared_kernels_dir
from analysis.core.labels import families_for
from dog_init import sample

SHARED = shared_kernels_dir()
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared kernels not found at {SHARED}")


@pytest.fixture(scope="module", params=[3, 5, 7])
def clf(request):
    return KernelClassifier.pretrained(request.param)


def test_bundled_sizes_and_metadata(clf):
    assert available_pretrained() == [3, 5, 7]
    assert clf.meta["format"] == "dog-init-classifier" and clf.meta["trained_on"]["real"]
    assert clf.kind == ("kmeans" if clf.size == 3 else "autoencoder")
    assert clf.threshold == {3: 0.1, 5: 0.2, 7: 0.3}[clf.size] and clf.symmetric
    if clf.kind == "autoencoder":
        assert len(clf.codebook) == 10_000 and len(clf.intervals) >= 6


def test_unavailable_size_names_the_available_ones():
    with pytest.raises(ValueError, match=r"9x9.*\[3, 5, 7\].*fit"):
        KernelClassifier.pretrained(9)


def test_random_kernels_are_not_clustered(clf):
    noise = np.random.default_rng(2024).standard_normal((5000, clf.size, clf.size)).astype(np.float32)
    assert clf.classify(noise).clustered_share() <= 0.02


@pytest.mark.parametrize("size", [5, 7])
def test_coarse_family_accuracy_on_fresh_noisy_dog_kernels(size):
    clf = KernelClassifier.pretrained(size)
    g = torch.Generator().manual_seed(99)
    kernels, names = sample(2000, size, {f: 1.0 for f in families_for(size)}, generator=g)
    noise = torch.randn(kernels.shape, generator=g)
    noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1)
    gain = torch.exp(torch.randn(len(kernels), 1, 1, generator=g))
    noisy = gain * (kernels + 0.25 * torch.rand(len(kernels), 1, 1, generator=g) * noise) + 3.0
    assert (clf.classify(noisy).labels == np.array(names)).mean() >= 0.9


@needs_shared
@pytest.mark.parametrize("size", [3, 5, 7])
def test_untrained_negative_control_is_not_clustered(size):
    clf = KernelClassifier.pretrained(size)
    assert clf.classify(np.load(SHARED / f"untrained-mcunetv2-large_k{size}.npy")).clustered_share() <= 0.02


@needs_shared
def test_efficientnet_5x5_kernels_are_clustered_like_the_paper():
    """Paper, Appendix L: 61.08 % of EfficientNet-Lite0's kernels clustered. The deepest quarter of its rows was
    never trained on (and deep layers are the least DoG-like, Fig. 7): at least 55 % of it must be clustered."""
    arr = np.load(SHARED / "effnet-lite0_k5.npy")
    result = KernelClassifier.pretrained(5).classify(arr)
    held_out = result.subset(slice(held_out_start("effnet-lite0_k5.npy", len(arr)), None))
    assert result.clustered_share() >= 0.6
    assert held_out.clustered_share() >= 0.55


@needs_shared
def test_master_key_filters_and_their_negatives():
    """Lindeberg, Babaiee and Kiasari's 8 ConvNeXtV2 filters: 6 derivatives, an on-centre, a cross/centre."""
    clf = KernelClassifier.pretrained(7)
    keys = np.load(SHARED / "master-key-filters_k7.npy")
    pos, neg = clf.classify(keys), clf.classify(-keys)
    assert pos.clustered.all() and neg.clustered.all()
    assert set(pos.labels[:6]) == {"first_derivative"} and set(neg.labels[:6]) == {"first_derivative"}
    assert pos.labels[6] == "on_centre" and neg.labels[6] == "off_centre"
    assert pos.labels[7] in {"on_centre", "on_cross"} and neg.labels[7] in {"off_centre", "off_cross"}


def test_weights_are_inside_the_package():
    import analysis
    folder = Path(analysis.__file__).parent / "weights"
    for size in (3, 5, 7):
        assert (folder / f"classifier_k{size}.safetensors").stat().st_size > 0
        assert (folder / f"classifier_k{size}.json").is_file()

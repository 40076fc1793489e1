"""The FFCV path's device-side augmentation (issue 18 §5): RandAugment per batch slice, colour jitter, random
erasing per image, normalisation; bad policies are refused."""
import importlib.util

import pytest
import torch

from train.data.batch_augment import BatchAugment, parse_rand_augment

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 24, 24), generator=g, dtype=torch.uint8)


def test_policy_strings():
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == {"n": 2, "m": 9.0, "mstd": 0.5}
    assert parse_rand_augment("rand-n1-m8-mstd0.5") == {"n": 1, "m": 8.0, "mstd": 0.5}
    for bad in ("v0", "augmix-m5", "rand-q3"):
        with pytest.raises(ValueError, match="auto_augment"):
            parse_rand_augment(bad)


def test_plain_batch_is_only_normalised():
    x = _batch()
    out = BatchAugment(MEAN, STD)(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, (x.float() / 255 - 0.5) / 0.25)


def test_rand_augment_draws_differ_between_slices_and_keep_shape():
    torch.manual_seed(0)
    x = _batch(64)
    out = BatchAugment(MEAN, STD, auto_augment="rand-n2-m9-mstd0.5", groups=16)(x)
    plain = BatchAugment(MEAN, STD)(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    changed = [(not torch.equal(a, b)) for a, b in zip(out.tensor_split(16), plain.tensor_split(16))]
    assert sum(changed) >= 8        # most slices got an op that changes pixels (identity is one of 14)


def test_random_erasing_per_image_on_the_batch():
    torch.manual_seed(0)
    x = torch.full((40, 3, 24, 24), 128, dtype=torch.uint8)
    out = BatchAugment(MEAN, STD, re_prob=0.5, re_mode="const")(x)
    plain = BatchAugment(MEAN, STD)(x)                        # every pixel (128 / 255 - 0.5) / 0.25, not 0
    erased = [bool((img == 0).any()) for img in out]          # const mode writes zeros
    assert 5 <= sum(erased) <= 35                             # each image on its own, p = 0.5
    assert all(torch.equal(a, b) for a, b, e in zip(out, plain, erased) if not e)


def test_channels_last_batches_stay_channels_last():
    x = _batch().contiguous(memory_format=torch.channels_last)
    out = BatchAugment(MEAN, STD, color_jitter=0.4)(x)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_float_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment(MEAN, STD)(torch.zeros(2, 3, 8, 8))

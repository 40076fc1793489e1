"""What the kernels of each published initialiser look like: one nonzero tap (impulse), one value on a few taps (box),
smooth blobs (gaussian), draws from a tap covariance (covariance: closed form, from kernels or a saved matrix, across
sizes), filters of a bank up to scale and symmetry (bank). Two cases use the shared real kernels and skip without
them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

from dog_init import bank_init_, box_init_, covariance_init_, default_std, find_depthwise, gaussian_init_, impulse_init_
from dog_init.covariance import gaussian_covariance, kernel_covariance
from dog_init.sources import resize_covariance, resize_kernels
from tests.helpers.inits import (MODELS, as_variants, assert_bank_kernels, assert_same_state, dw_net, kernels,
                                 neighbour_corr, rel_fro, state, synthetic_bank, synthetic_kernels, tap_corr)


# --- impulse and box ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", MODELS)
def test_each_impulse_kernel_has_exactly_one_nonzero_tap(arch):
    model = timm.create_model(arch)
    report = impulse_init_(model, seed=0)
    for (_, conv), w in zip(find_depthwise(model)[0], kernels(model)):
        nonzero = (w != 0).flatten(1).sum(dim=1)
        assert (nonzero == 1).all()
        # Zheng et al.'s value sqrt(1/3): the layer's RMS weight is PyTorch's default std
        assert torch.allclose(w.flatten(1).abs().max(dim=1).values, torch.full((len(w),), math.sqrt(1 / 3),
                                                                                 dtype=torch.float64), rtol=1e-5)
        assert math.isclose(w.square().mean().sqrt().item(), default_std(conv), rel_tol=1e-5)
    assert set(report.counts()) == {"impulse"} and "impulse" in report.summary()


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("taps", [None, 1, 4])
def test_box_kernels_take_one_nonzero_value(arch, taps):
    model = timm.create_model(arch)
    box_init_(model, taps, seed=1)
    for w in kernels(model):
        n = w.shape[-1] ** 2 if taps is None else taps
        flat = w.flatten(1)
        assert ((flat != 0).sum(dim=1) == n).all()
        values = flat[flat != 0].reshape(len(w), n)
        assert torch.allclose(values, torch.full_like(values, math.sqrt(1 / (3 * n))), rtol=1e-5)


def test_box_taps_are_spread_over_the_kernel():
    model = nn.Sequential(nn.Conv2d(2048, 2048, 3, groups=2048))
    box_init_(model, 2, seed=0)
    hits = (kernels(model)[0] != 0).double().mean(dim=0)   # each tap is chosen with probability 2/9
    assert torch.allclose(hits, torch.full_like(hits, 2 / 9), atol=0.03)


# --- gaussian and covariance --------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", MODELS)
def test_covariance_and_gaussian_kernels_are_smooth_and_default_ones_are_not(arch):
    plain = timm.create_model(arch)
    pooled = {}
    for w in kernels(plain):
        pooled.setdefault(w.shape[-1], []).append(w)
    for ws in pooled.values():
        assert abs(neighbour_corr(torch.cat(ws))) < 0.1
    for init in (covariance_init_, gaussian_init_):
        model = timm.create_model(arch)
        init(model, seed=0)
        for w in kernels(model):
            assert neighbour_corr(w) > 0.3, init.__name__


def test_gaussian_kernels_are_blobs_at_a_tap():
    model = nn.Sequential(nn.Conv2d(64, 64, 7, groups=64))
    gaussian_init_(model, sigma=1.5, scale="unit", seed=0)
    w = kernels(model)[0]
    for kernel in w:
        y, x = divmod(int(kernel.argmax()), 7)
        grid = torch.arange(7, dtype=torch.float64)
        blob = torch.exp(-((grid[:, None] - y) ** 2 + (grid[None] - x) ** 2) / (2 * 1.5 ** 2))
        assert torch.allclose(kernel, blob / blob.norm(), atol=1e-6)


def test_covariance_closed_form_matches_its_sigma_and_smooths_with_depth():
    model = nn.Sequential(nn.Conv2d(4096, 4096, 5, groups=4096))
    covariance_init_(model, sigma=1.2, seed=0)
    want = gaussian_covariance(5, 1.2).numpy()                    # a correlation matrix already (unit diagonal)
    assert rel_fro(tap_corr(kernels(model)[0]), want) < 0.15
    deep = nn.Sequential(*[nn.Conv2d(1024, 1024, 5, groups=1024) for _ in range(4)])
    covariance_init_(deep, sigma=0.7, growth=2.0, seed=0)
    corr = [neighbour_corr(w) for w in kernels(deep)]
    assert corr == sorted(corr) and corr[-1] - corr[0] > 0.3


def test_covariance_centre_gives_zero_sum_kernels():
    model = dw_net()
    covariance_init_(model, centre=True, seed=0)
    for w in kernels(model):
        assert torch.allclose(w.sum(dim=(1, 2)), torch.zeros(len(w), dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("real", [False, True])
def test_covariance_from_a_source_reproduces_its_tap_correlation(real, request):
    effnet5 = request.getfixturevalue("shared_kernel")("effnet-lite0_k5.npy") if real else None
    source = np.load(effnet5) if real else synthetic_kernels()
    model = nn.Sequential(nn.Conv2d(4096, 4096, 5, padding=2, groups=4096))
    covariance_init_(model, source=effnet5 if real else source, seed=0)
    rows = np.abs(source).reshape(len(source), -1).max(axis=1) > 0          # pruned, all-zero kernels left out
    assert rel_fro(tap_corr(kernels(model)[0]), tap_corr(source[rows])) < 0.15


def test_covariance_source_as_saved_matrix_and_across_sizes(tmp_path):
    source = synthetic_kernels()
    cov = kernel_covariance(torch.from_numpy(source)).numpy()
    np.save(tmp_path / "cov.npy", cov)
    model = nn.Sequential(nn.Conv2d(4096, 4096, 5, groups=4096), nn.Conv2d(4096, 4096, 7, groups=4096))
    covariance_init_(model, source=tmp_path / "cov.npy", seed=0)
    five, seven = kernels(model)
    assert rel_fro(tap_corr(five), tap_corr(source)) < 0.15
    # 5x5 -> 7x7: the covariance of the resized source kernels, which is R C R^T
    resized = resize_kernels(torch.from_numpy(source), 7).numpy()
    assert rel_fro(tap_corr(seven), tap_corr(resized)) < 0.15
    direct = resize_covariance(torch.from_numpy(cov), 7).numpy()
    assert np.allclose(kernel_covariance(torch.from_numpy(resized)).numpy(), direct, rtol=1e-6, atol=1e-8)


def test_resize_none_refuses_other_sizes():
    model = dw_net()   # 5x5 and 3x3
    before = state(model)
    with pytest.raises(ValueError, match=r"5x5 kernels.*3x3.*resize=None"):
        covariance_init_(model, source=synthetic_kernels(100), resize=None, seed=0)
    with pytest.raises(ValueError, match=r"7x7 filters.*5x5.*resize=None"):
        bank_init_(model, source=synthetic_bank(), resize=None, seed=0)
    assert_same_state(model, before)


# --- bank ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["master", "synthetic"])
def test_every_bank_kernel_is_a_bank_filter_up_to_scale_and_symmetry(which, request):
    master7 = request.getfixturevalue("shared_kernel")("master-key-filters_k7.npy") if which == "master" else None
    bank = np.load(master7) if which == "master" else synthetic_bank()
    model = timm.create_model("convnext_atto")   # 7x7 depthwise
    report = bank_init_(model, source=master7 if which == "master" else bank, seed=0)
    for w, layer in zip(kernels(model), report.layers):
        assert_bank_kernels(w, bank)
        counts = list(layer.counts().values())
        assert len(counts) == len(bank) and max(counts) - min(counts) <= 1    # every filter equally often
        for i, tag in enumerate(layer.families):           # the tag names the filter (up to a symmetry)
            row = int(tag.split(":")[1])
            single = bank[row:row + 1]
            assert_bank_kernels(w[i:i + 1], single)


def test_bank_without_symmetries_and_resized_onto_other_sizes():
    bank = synthetic_bank(7)
    model = dw_net()                                  # 5x5 and 3x3: resized
    bank_init_(model, source=bank, symmetries=False, seed=0)
    for w in kernels(model):
        assert_bank_kernels(w, bank, symmetries=False)
    model = nn.Sequential(nn.Conv2d(512, 512, 7, groups=512))
    bank_init_(model, source=bank, seed=1)
    w = kernels(model)[0].flatten(1)
    variants = as_variants(bank, 7)
    used = set(torch.cdist(w / w.norm(dim=1, keepdim=True), variants).argmin(dim=1).tolist())
    assert len(used) == 16 * len(bank)                # all symmetries and both signs occur


def test_a_bank_larger_than_a_layer_gives_a_random_subset_and_keeps_source_rows():
    bank = synthetic_bank(3, 40)
    bank[[0, 7]] = 0                                  # pruned, all-zero filters are left out
    model = nn.Sequential(*[nn.Conv2d(16, 16, 3, groups=16) for _ in range(6)])
    report = bank_init_(model, source=bank, seed=0)
    used = [int(f.split(":")[1]) for layer in report.layers for f in layer.families]
    assert 0 not in used and 7 not in used and max(used) > 16
    assert all(len(set(layer.families)) == 16 for layer in report.layers)   # no filter twice in a layer
    for w, layer in zip(kernels(model), report.layers):
        for i, tag in enumerate(layer.families):
            row = int(tag.split(":")[1])
            assert_bank_kernels(w[i:i + 1], bank[row:row + 1])

"""The depthwise initialisers published beside DoG (covariance, impulse, box, gaussian, bank) under dog_init's common
contract: scales, seeds, untouched tensors, include / exclude, argument errors named before anything changes, the
report. What their kernels look like: test_published_init_kernels.py; summed branches and weight norm:
test_summed_and_reparametrised.py."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import timm
import torch
from timm.models.convmixer import ConvMixer
from torch import nn

from dog_init import bank_init_, default_std, find_depthwise, gaussian_init_, impulse_init_
from tests.helpers.inits import PUBLISHED, assert_same_state, dw_net, init_with, kernels, state, synthetic_bank


# --- scales, seeds, untouched tensors -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", PUBLISHED)
def test_scales(name):
    for scale, norm in [("unit", 1.0), (0.37, 0.37)]:
        model = dw_net()
        init_with(name, model, scale=scale, seed=0)
        for w in kernels(model):
            assert torch.allclose(w.flatten(1).norm(dim=1), torch.full((len(w),), norm, dtype=torch.float64),
                                  rtol=1e-5)
    model = dw_net()
    old = [w.std().item() for w in kernels(model)]
    init_with(name, model, scale="match", seed=0)
    for w, std in zip(kernels(model), old):
        assert math.isclose(w.square().mean().sqrt().item(), std, rel_tol=1e-5)
    model = dw_net()
    init_with(name, model, seed=0)
    for (_, conv), w in zip(find_depthwise(model)[0], kernels(model)):
        assert math.isclose(w.square().mean().sqrt().item(), default_std(conv), rel_tol=1e-5)


@pytest.mark.parametrize("name", PUBLISHED)
def test_seeded_reproducible_and_other_tensors_bit_for_bit(name):
    base = timm.create_model("mobilenetv2_050")
    first, second, third = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    before = state(base)
    report = init_with(name, first, seed=11)
    init_with(name, second, seed=11)
    init_with(name, third, seed=12)
    changed = {f"{layer.name}.weight" for layer in report.layers}
    assert_same_state(first, before, changed)        # BN stats, biases, pointwise convs, the head: untouched
    assert all(not torch.equal(first.state_dict()[k], before[k]) for k in changed)
    assert_same_state(second, state(first))
    assert any(not torch.equal(third.state_dict()[k], first.state_dict()[k]) for k in changed)
    torch.manual_seed(5)                              # seed=None: drawn from torch's global RNG, and reported
    a = copy.deepcopy(base)
    drawn = init_with(name, a).seed
    torch.manual_seed(5)
    b = copy.deepcopy(base)
    assert init_with(name, b).seed == drawn
    assert_same_state(a, state(b))


def test_include_exclude_and_skips():
    model = timm.create_model("convnext_atto")
    before = state(model)
    report = impulse_init_(model, include=r"^stages\.0\.", exclude=r"\.1\.", seed=0)
    assert [layer.name for layer in report.layers] == ["stages.0.blocks.0.conv_dw"]
    assert ("stages.0.blocks.1.conv_dw", "matched by exclude") in report.skipped
    assert_same_state(model, before, {"stages.0.blocks.0.conv_dw.weight"})


# --- bad arguments ------------------------------------------------------------------------------------------------
BAD = [
    ("impulse", dict(scale="big"), r"scale 'big'.*default, unit, match"),
    ("impulse", dict(seed=-1), r"seed.*-1"),
    ("impulse", dict(include="("), r"include regex '\('"),
    ("box", dict(taps=0), r"taps.*0"),
    ("box", dict(taps=1.5), r"taps.*1\.5"),
    ("box", dict(taps=10), r"taps=10.*9 taps of a 3x3.*1 to 9"),
    ("gaussian", dict(sigma=0), r"sigma.*positive.*0"),
    ("gaussian", dict(sigma=float("nan")), r"sigma.*nan"),
    ("gaussian", dict(sigma="wide"), r"sigma.*'wide'"),
    ("covariance", dict(growth=-1), r"growth.*>= 0.*-1"),
    ("covariance", dict(centre="yes"), r"centre.*True or False.*'yes'"),
    ("covariance", dict(resize="nearest"), r"resize 'nearest'.*bilinear, bicubic"),
    ("covariance", dict(source="no/such/file.npy"), r"'no/such/file.npy' does not exist"),
    ("covariance", dict(source=np.zeros((4, 3, 5))), r"shape \(N, k, k\).*\(4, 3, 5\)"),
    ("covariance", dict(source=np.full((4, 3, 3), np.nan)), r"non-finite"),
    ("covariance", dict(source=-np.eye(9)), r"not positive semi-definite"),
    ("covariance", dict(source=np.ones((5, 5))), r"\(k\^2, k\^2\).*\(5, 5\)"),
    ("covariance", dict(source=np.ones((6, 3, 3))), r"do not vary"),
    ("covariance", dict(source=synthetic_bank(3), sigma=2.0), r"sigma=2\.0.*closed-form"),
    ("bank", dict(source=np.zeros((3, 5, 5))), r"at least 1 kernels that are not all zero, got 0 of 3"),
    ("bank", dict(source="plain string"), r"'plain string' does not exist"),
    ("bank", dict(source=[[1.0]]), r"numpy array, a torch tensor or a \.npy path.*list"),
    ("bank", dict(symmetries="yes"), r"symmetries.*True or False"),
    ("bank", dict(normalise=1), r"normalise.*True or False"),
]


@pytest.mark.parametrize("name, kwargs, match", BAD)
def test_bad_arguments_are_named_and_leave_the_model(name, kwargs, match):
    model = dw_net(k=3)
    before = state(model)
    with pytest.raises(ValueError, match=match):
        init_with(name, model, **kwargs)
    assert_same_state(model, before)


def test_a_model_must_be_a_module():
    with pytest.raises(TypeError, match=r"nn.Module.*timm.create_model"):
        impulse_init_("convnext_atto")
    with pytest.raises(ValueError, match=r"no depthwise"):
        gaussian_init_(nn.Sequential(nn.Conv2d(3, 8, 3)))


# --- the report ---------------------------------------------------------------------------------------------------
def test_convmixer_and_report_summary():
    model = ConvMixer(dim=64, depth=3, kernel_size=7, patch_size=7, act_layer=nn.ReLU)
    report = bank_init_(model, source=synthetic_bank(7, 4), seed=0)
    assert len(report.layers) == 3 and report.counts() == {f"bank:{i}": 48 for i in range(4)}
    assert report.mix == {f"bank:{i}": 0.25 for i in range(4)}
    text = report.summary()
    assert "bank:0" in text and "3 depthwise layers initialised" in text

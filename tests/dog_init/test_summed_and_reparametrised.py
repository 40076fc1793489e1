"""Depthwise weights that are not one plain tensor, for dog_init_ and the published initialisers: a weight-normed conv
gets the kernel a plain one gets (both APIs); spectral norm and meta weights are refused before anything changes;
parallel branches that are summed (MobileOne, FastViT, a RepVGG-style ModuleList) carry one kernel between them,
while a chain of the same modules does not."""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import timm
import torch
from torch import nn

from dog_init import covariance_init_, default_std, dog_init_, gaussian_init_
from tests.helpers.inits import (PUBLISHED, assert_bank_kernels, assert_same_state, dw_net, init_with, single_dw_net,
                                 state, synthetic_bank)


# --- weight norm, spectral norm, meta weights ---------------------------------------------------------------------
@pytest.mark.parametrize("api", ["parametrizations", "hook"])
def test_weight_norm_conv_applies_the_same_dog_kernel_as_a_plain_one(api):
    plain, normed = single_dw_net(), single_dw_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # the hook API is deprecated, still in use
        if api == "parametrizations":
            torch.nn.utils.parametrizations.weight_norm(normed[1])
        else:
            torch.nn.utils.weight_norm(normed[1])
    before = normed[1].weight.detach().clone()
    report = dog_init_(normed, seed=3)
    dog_init_(plain, seed=3)
    assert [layer.name for layer in report.layers] == ["1"]
    assert not torch.allclose(normed[1].weight.detach(), before)
    assert torch.allclose(normed[1].weight.detach(), plain[1].weight.detach(), rtol=1e-5, atol=1e-7)
    normed(torch.zeros(1, 3, 9, 9))          # the hook API recomputes the weight here
    assert torch.allclose(normed[1].weight.detach(), plain[1].weight.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("api", ["parametrizations", "hook"])
@pytest.mark.parametrize("name", PUBLISHED)
def test_weight_norm_conv_applies_the_same_kernel_as_a_plain_one(api, name):
    plain, normed = dw_net(), dw_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # the hook API is deprecated, still in use
        for conv in (normed[1], normed[2]):
            if api == "parametrizations":
                torch.nn.utils.parametrizations.weight_norm(conv)
            else:
                torch.nn.utils.weight_norm(conv)
    before = normed[1].weight.detach().clone()
    report = init_with(name, normed, seed=3)
    init_with(name, plain, seed=3)
    assert [layer.name for layer in report.layers] == ["1", "2"]
    assert not torch.allclose(normed[1].weight.detach(), before)
    for i in (1, 2):
        assert torch.allclose(normed[i].weight.detach(), plain[i].weight.detach(), rtol=1e-5, atol=1e-7)
    normed(torch.zeros(1, 3, 9, 9))                      # the hook API recomputes the weight here
    for i in (1, 2):
        assert torch.allclose(normed[i].weight.detach(), plain[i].weight.detach(), rtol=1e-5, atol=1e-7)


def test_spectral_norm_is_refused_by_dog_init_before_anything_changes():
    model = single_dw_net()
    torch.nn.utils.parametrizations.spectral_norm(model[1])
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"layer '1'.*parametrisation.*remove_parametrizations"):
        dog_init_(model, seed=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_spectral_norm_is_refused_by_the_published_inits_too():
    model = dw_net()
    torch.nn.utils.parametrizations.spectral_norm(model[2])
    before = state(model)
    with pytest.raises(ValueError, match=r"layer '2'.*parametrisation"):
        gaussian_init_(model, seed=0)
    assert_same_state(model, before)


def test_meta_weights_are_refused():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8))
    with pytest.raises(ValueError, match=r"layer '0'.*meta device.*to_empty"):
        dog_init_(model, seed=0)


# --- summed branches ----------------------------------------------------------------------------------------------
def test_mobileone_branches_of_a_block_carry_one_kernel_between_them():
    model = timm.create_model("mobileone_s0", pretrained=False)
    report = dog_init_(model, seed=0)
    block = model.stages[0][0]
    branches = [b.conv.weight.detach() for b in block.conv_kxk]
    assert len(branches) == 4
    for other in branches[1:]:                       # every channel: the same kernel in every branch
        assert torch.equal(other, branches[0])
    applied = sum(branches)
    assert abs(applied.std().item() - default_std(block.conv_kxk[0].conv)) < 1e-4 * default_std(block.conv_kxk[0].conv)
    layers = {layer.name: layer for layer in report.layers}
    names = [f"stages.0.0.conv_kxk.{i}.conv" for i in range(4)]
    assert sorted(layers[names[0]].summed_with) == names[1:]
    assert all(layers[n].families == layers[names[0]].families for n in names)
    assert names in report.summed_groups() and "summed branches" in report.summary()


@pytest.fixture(scope="module")
def mobileone():
    return timm.create_model("mobileone_s0", pretrained=False)


@pytest.mark.parametrize("name", PUBLISHED)
def test_mobileone_branches_share_one_kernel_per_channel(mobileone, name):
    model = copy.deepcopy(mobileone)
    bank = synthetic_bank(3)
    report = init_with(name, model, seed=0, **({"source": bank} if name == "bank" else {}))
    block = model.stages[0][0]
    branches = [b.conv.weight.detach().double()[:, 0] for b in block.conv_kxk]
    assert len(branches) == 4 and all(torch.equal(b, branches[0]) for b in branches[1:])
    applied = sum(branches)
    conv = block.conv_kxk[0].conv
    assert math.isclose(applied.square().mean().sqrt().item(), default_std(conv), rel_tol=1e-5)
    layers = {layer.name: layer for layer in report.layers}
    names = [f"stages.0.0.conv_kxk.{i}.conv" for i in range(4)]
    assert sorted(layers[names[0]].summed_with) == names[1:]
    assert all(layers[n].families == layers[names[0]].families for n in names)
    if name == "impulse":
        assert ((applied != 0).flatten(1).sum(dim=1) == 1).all()
    if name == "bank":
        assert_bank_kernels(applied, bank)


@pytest.mark.parametrize("init, spread", [
    (dog_init_, lambda w: w.std()),                       # DoG: the default std of the large conv
    (covariance_init_, lambda w: w.square().mean().sqrt()),  # covariance: its root-mean-square weight
], ids=["dog", "covariance"])
def test_fastvit_large_and_small_kernel_sum_to_one_kernel(init, spread):
    model = timm.create_model("fastvit_t8", pretrained=False)
    init(model, seed=0)
    block = model.stages[1].downsample.proj[0]
    large, small = block.large_conv.conv.weight.detach(), block.small_conv.conv.weight.detach()
    pad = (large.shape[-1] - small.shape[-1]) // 2
    # pixels both windows cover are split equally; the applied sum is one kernel at the layer's scale
    assert torch.equal(large[..., pad:-pad, pad:-pad], small)
    applied = large + nn.functional.pad(small, [pad] * 4)
    assert abs(spread(applied).item() / default_std(block.large_conv.conv) - 1) < 1e-4


class RepBlock(nn.Module):
    """A RepVGG-style block without any reparameterisation method: summed conv-BN branches in a ModuleList."""

    def __init__(self, c=6, n=3):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c))
                                      for _ in range(n))

    def forward(self, x):
        return sum(b(x) for b in self.branches)


class Chain(RepBlock):
    """The same modules applied one after another: not summed, so not grouped."""

    def forward(self, x):
        for b in self.branches:
            x = b(x)
        return x


def test_summed_module_list_is_grouped_and_a_chain_of_the_same_modules_is_not():
    summed, chain = RepBlock(), Chain()
    report = dog_init_(summed, seed=1)
    assert report.summed_groups() == [[f"branches.{i}.0" for i in range(3)]]
    w = [b[0].weight for b in summed.branches]
    assert torch.equal(w[0], w[1]) and torch.equal(w[1], w[2])
    report = dog_init_(chain, seed=1)
    assert report.summed_groups() == [] and not torch.equal(chain.branches[0][0].weight, chain.branches[1][0].weight)

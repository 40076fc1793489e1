"""Issue 7, dog_init side: weight reparameterisations (item 2), scale="match" on weights without a std (3), summed
parallel branches (4), parameter domains (5) and public-API errors (13)."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import timm
import torch
from torch import nn

from dog_init import allocate, default_std, dog_init_, generate, render, sample, sample_params
from dog_init.families import check_size


def dw_net(k: int = 5, c: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, c, 1), nn.Conv2d(c, c, k, padding=k // 2, groups=c))


# --- item 2: weight norm ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", ["parametrizations", "hook"])
def test_weight_norm_conv_applies_the_same_dog_kernel_as_a_plain_one(api):
    plain, normed = dw_net(), dw_net()
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


def test_spectral_norm_is_refused_before_anything_changes():
    model = dw_net()
    torch.nn.utils.parametrizations.spectral_norm(model[1])
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"layer '1'.*parametrisation.*remove_parametrizations"):
        dog_init_(model, seed=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_meta_weights_are_refused():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8))
    with pytest.raises(ValueError, match=r"layer '0'.*meta device.*to_empty"):
        dog_init_(model, seed=0)


# --- item 3: scale="match" needs a std to match -------------------------------------------------------------------
@pytest.mark.parametrize("fill", [float("nan"), float("inf"), 0.0, 0.25])
def test_match_scale_refuses_weights_without_a_finite_nonzero_std(fill):
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 5, groups=8))
    with torch.no_grad():
        model[1].weight.fill_(fill)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"scale='match'.*'1'.*scale='default'"):
        dog_init_(model, scale="match", seed=0)
    for key, value in model.state_dict().items():   # nothing written, not even the healthy first layer
        assert torch.equal(value, state[key]) or (torch.isnan(value).all() and torch.isnan(state[key]).all())


# --- item 4: summed branches --------------------------------------------------------------------------------------
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


def test_fastvit_large_and_small_kernel_sum_to_one_kernel():
    model = timm.create_model("fastvit_t8", pretrained=False)
    dog_init_(model, seed=0)
    block = model.stages[1].downsample.proj[0]
    large, small = block.large_conv.conv.weight.detach(), block.small_conv.conv.weight.detach()
    pad = (large.shape[-1] - small.shape[-1]) // 2
    # pixels both windows cover are split equally; the sum has the default std of the large conv
    assert torch.equal(large[..., pad:-pad, pad:-pad], small)
    applied = large + nn.functional.pad(small, [pad] * 4)
    assert abs(applied.std().item() / default_std(block.large_conv.conv) - 1) < 1e-4


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


# --- item 5: parameter domains ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixed, match", [
    ({"sigma": 0.0}, r"sigma must be finite and > 0, got 0\.0"),
    ({"sigma": float("nan")}, r"sigma must be finite and > 0, got nan"),
    ({"ratio": -1.0}, r"ratio must be finite and > 0"),
    ({"elongation": 0.5}, r"elongation must be finite and >= 1"),
    ({"theta": float("inf")}, r"theta must be finite"),
    ({"ratio": 1.0, "surround": 1.0}, r"is zero and has no unit-norm shape.*ratio=1, surround=1"),
    ({"dx": 1e3}, r"is zero and has no unit-norm shape"),
])
def test_fixed_parameters_outside_their_domain_are_refused(fixed, match):
    with pytest.raises(ValueError, match=match):
        generate("on_centre", 2, 7, **fixed)


def test_domains_of_the_other_families():
    with pytest.raises(ValueError, match=r"width must be finite and > 0"):
        generate("on_cross", 1, 7, width=0.0)
    with pytest.raises(ValueError, match=r"sign must be one of 1, -1, got 0\.5"):
        generate("second_derivative", 1, 7, sign=0.5)
    with pytest.raises(ValueError, match=r"softness must be finite and > 0"):
        generate("on_square", 1, 5, softness=0.0)
    assert torch.isfinite(generate("on_square", 3, 5, offset=0.0)).all()   # a centred block is a valid shape


@pytest.mark.parametrize("n", [-5, 2.5, "3", True])
def test_allocate_refuses_what_is_not_a_count(n):
    with pytest.raises(ValueError, match=r"n must be an integer >= 0"):
        allocate(n, "paper")


# --- item 13: public API errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model, match", [(None, "NoneType"), ("convnext_tiny", r"str.*timm\.create_model")])
def test_dog_init_refuses_what_is_not_a_module(model, match):
    with pytest.raises(TypeError, match=rf"model must be a torch nn\.Module.*{match}"):
        dog_init_(model)


@pytest.mark.parametrize("seed", [1.5, 2**64, -1, "0"])
def test_bad_seeds_are_named(seed):
    with pytest.raises(ValueError, match=r"seed must be None or an integer in \[0, 2\*\*64\)"):
        dog_init_(dw_net(), seed=seed)


@pytest.mark.parametrize("what", ["include", "exclude"])
def test_patterns_must_be_strings(what):
    with pytest.raises(TypeError, match=rf"{what} must be None, a regex string or a list of them, got 5"):
        dog_init_(dw_net(), **{what: 5})


def test_render_names_missing_parameters():
    with pytest.raises(ValueError, match=r"render\('on_centre'\) needs parameters sigma.*missing: sigma"):
        render("on_centre", 7, {})
    params = sample_params("on_centre", 2)
    params["dx"] = params["dx"][:1]
    with pytest.raises(ValueError, match=r"same length"):
        render("on_centre", 7, params)


def test_numpy_scalars_are_accepted_like_python_numbers():
    model = dw_net()
    dog_init_(model, scale=np.float32(2.0), seed=np.int64(4))
    assert torch.allclose(model[1].weight.flatten(1).norm(dim=1), torch.full((8,), 2.0))
    assert generate("on_centre", np.int64(3), np.int64(7)).shape == (3, 7, 7)
    kernels, families = sample(np.int32(4), np.int64(5))
    assert kernels.shape == (4, 5, 5) and len(families) == 4


def test_size_rule_and_message_agree():
    assert check_size(33) == 33 and check_size(101) == 101
    for bad in (1, 4, 7.0, "7", True):
        with pytest.raises(ValueError, match=r"odd integer >= 3 \(3, 5, 7, 9, \.\.\.\), got") as info:
            check_size(bad)
        assert "31" not in str(info.value)

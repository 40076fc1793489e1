"""dog_init_'s arguments: scale, include / exclude, mix, seed and the report it returns; and the refusals that name a
bad value (a bad scale, pattern, mix or seed, a model that is not a module or has no depthwise conv, weights that
scale="match" cannot match) before any weight changes."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

import dog_init
from dog_init import allocate, default_std, dog_init_, find_depthwise, generate, sample
from tests.helpers.inits import UserNet, assert_untouched, single_dw_net


@pytest.fixture(scope="module")
def convnext():
    torch.manual_seed(0)
    return timm.create_model("convnext_atto", pretrained=False)


# --- scale --------------------------------------------------------------------------------------------------------
def kernel_norms(conv):
    return conv.weight.detach().flatten(1).norm(dim=1)


@pytest.mark.parametrize("arch", ["convnext_atto", "user"])
def test_scale_unit_and_float(convnext, arch):
    """scale="unit" gives unit-L2-norm kernels; a float gives kernels of that norm."""
    for scale, norm in [("unit", 1.0), (0.37, 0.37), (2, 2.0)]:
        model = copy.deepcopy(convnext) if arch == "convnext_atto" else UserNet()
        report = dog_init_(model, scale=scale, seed=0)
        for layer in report.layers:
            norms = kernel_norms(model.get_submodule(layer.name))
            torch.testing.assert_close(norms, torch.full_like(norms, norm), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["convnext_atto", "user"])
def test_scale_match_keeps_std(convnext, arch):
    """scale="match" keeps each layer's previous weight std (timm's trunc_normal, PyTorch's uniform, ...)."""
    model = copy.deepcopy(convnext) if arch == "convnext_atto" else UserNet()
    old = {name: conv.weight.std().item() for name, conv in find_depthwise(model)[0]}
    report = dog_init_(model, scale="match", seed=0)
    assert report.scale == "match"
    for layer in report.layers:
        conv = model.get_submodule(layer.name)
        assert math.isclose(conv.weight.std().item(), old[layer.name], rel_tol=1e-4)
    # convnext's timm init (trunc_normal std .02) differs from PyTorch's default, so "match" is not "default"
    if arch == "convnext_atto":
        conv = model.get_submodule(report.layers[0].name)
        assert not math.isclose(conv.weight.std().item(), default_std(conv), rel_tol=0.05)


@pytest.mark.parametrize("bad", ["big", "", -1.0, 0, 0.0, float("nan"), float("inf"), True, None])
def test_scale_invalid(bad):
    """An invalid scale raises ValueError naming it, before touching the model."""
    model = UserNet()
    before = copy.deepcopy(model)
    with pytest.raises(ValueError) as info:
        dog_init_(model, scale=bad, seed=0)
    assert repr(bad) in str(info.value)
    assert_untouched(model, before)


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


def test_numpy_scalars_are_accepted_like_python_numbers():
    model = single_dw_net()
    dog_init_(model, scale=np.float32(2.0), seed=np.int64(4))
    assert torch.allclose(model[1].weight.flatten(1).norm(dim=1), torch.full((8,), 2.0))
    assert generate("on_centre", np.int64(3), np.int64(7)).shape == (3, 7, 7)
    kernels, families = sample(np.int32(4), np.int64(5))
    assert kernels.shape == (4, 5, 5) and len(families) == 4


def test_default_std_formula():
    """default_std is the std of PyTorch's default conv init, 1 / sqrt(3 fan_in) (checked empirically)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(512, 512, 7, groups=512)
    assert math.isclose(default_std(conv), 1 / math.sqrt(3 * 49))
    assert math.isclose(conv.weight.std().item(), default_std(conv), rel_tol=0.02)
    conv = nn.Conv2d(8, 16, 5, groups=8)
    assert math.isclose(default_std(conv), 1 / math.sqrt(3 * 25))


# --- include / exclude --------------------------------------------------------------------------------------------
def test_include_exclude(convnext):
    """include keeps only matching convs, exclude removes matching ones; the rest stay bit-identical and are
    listed as skipped with the reason."""
    all_names = [name for name, _ in find_depthwise(convnext)[0]]
    model = copy.deepcopy(convnext)
    report = dog_init_(model, include=r"stages\.[01]\.", exclude=[r"blocks\.1\."], seed=0)
    chosen = [layer.name for layer in report.layers]
    assert chosen == [n for n in all_names if n.startswith(("stages.0.", "stages.1.")) and ".blocks.1." not in n]
    assert chosen
    reasons = dict(report.skipped)
    for name in all_names:
        if name not in chosen:
            expect = "matched by exclude" if name.startswith(("stages.0.", "stages.1.")) else "not matched by include"
            assert reasons[name] == expect
    assert_untouched(model, convnext, changed={f"{n}.weight" for n in chosen})
    for name in chosen:
        assert not torch.equal(model.get_submodule(name).weight, convnext.get_submodule(name).weight)


def test_exclude_only(convnext):
    """exclude alone removes the matching convs."""
    model = copy.deepcopy(convnext)
    report = dog_init_(model, exclude=r"^stages\.3", seed=0)
    assert report.layers and not any(layer.name.startswith("stages.3") for layer in report.layers)
    stage3 = [name for name, _ in find_depthwise(convnext)[0] if name.startswith("stages.3")]
    assert len(stage3) == 2   # convnext_atto: depths (2, 2, 6, 2)
    assert len(report.layers) == len(find_depthwise(convnext)[0]) - len(stage3)
    assert [reason for name, reason in report.skipped if name in stage3] == ["matched by exclude"] * 2


@pytest.mark.parametrize("kwargs, bad", [
    (dict(include="stages.("), "stages.("),
    (dict(exclude=["ok", "[unclosed"]), "[unclosed"),
    (dict(include="no_such_layer"), "no_such_layer"),
    (dict(exclude="."), "exclude='.'"),
])
def test_include_exclude_errors(convnext, kwargs, bad):
    """An invalid regex, or filters that leave no conv, raise ValueError naming the pattern; no weight changes."""
    model = copy.deepcopy(convnext)
    with pytest.raises(ValueError) as info:
        dog_init_(model, seed=0, **kwargs)
    assert bad in str(info.value)
    assert_untouched(model, convnext)


@pytest.mark.parametrize("what", ["include", "exclude"])
def test_patterns_must_be_strings(what):
    with pytest.raises(TypeError, match=rf"{what} must be None, a regex string or a list of them, got 5"):
        dog_init_(single_dw_net(), **{what: 5})


# --- errors on the model / mix ------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, cls", [
    (lambda: timm.create_model("resnet18", pretrained=False), "ResNet"),
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 3)), "Sequential"),
    (lambda: nn.Sequential(nn.Conv2d(8, 8, 1, groups=8), nn.Conv2d(8, 8, 3, groups=2)), "Sequential"),
    (lambda: nn.Linear(4, 4), "Linear"),
])
def test_no_depthwise_conv(make, cls):
    """A model without an eligible depthwise conv raises ValueError naming its class, and is left alone."""
    model = make()
    before = copy.deepcopy(model)
    with pytest.raises(ValueError) as info:
        dog_init_(model, seed=0)
    assert cls in str(info.value)
    assert_untouched(model, before)


@pytest.mark.parametrize("model, match", [(None, "NoneType"), ("convnext_tiny", r"str.*timm\.create_model")])
def test_dog_init_refuses_what_is_not_a_module(model, match):
    with pytest.raises(TypeError, match=rf"model must be a torch nn\.Module.*{match}"):
        dog_init_(model)


@pytest.mark.parametrize("mix, bad", [("nonsense", "nonsense"), ({"blob": 1.0}, "blob"),
                                      ({"on_centre": -1}, "-1"), ({"on_centre": 0}, "0")])
def test_bad_mix_leaves_model(mix, bad):
    """An invalid mix raises ValueError naming the value before any weight is touched."""
    model = UserNet()
    before = copy.deepcopy(model)
    with pytest.raises(ValueError) as info:
        dog_init_(model, mix, seed=0)
    assert bad in str(info.value)
    assert_untouched(model, before)


def test_custom_mix_counts(convnext):
    """A dict mix is honoured per layer with exact largest-remainder counts."""
    model = copy.deepcopy(convnext)
    mix = {"first_derivative": 2, "on_square": 1, "off_cross": 1}
    report = dog_init_(model, mix, seed=0)
    assert report.mix == pytest.approx({"off_cross": 0.25, "first_derivative": 0.5, "on_square": 0.25})
    for layer in report.layers:
        assert layer.counts() == {f: c for f, c in allocate(len(layer.families), mix).items() if c}
    assert set(report.counts()) == set(mix)


# --- seeds and the report -----------------------------------------------------------------------------------------
def dw_weights(model):
    return [conv.weight.detach().clone() for _, conv in find_depthwise(model)[0]]


def test_seed_reproducible(convnext):
    """Same seed -> identical weights and families; different seeds -> different weights."""
    a, b, c = (copy.deepcopy(convnext) for _ in range(3))
    ra, rb = dog_init_(a, seed=7), dog_init_(b, seed=7)
    dog_init_(c, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(dw_weights(a), dw_weights(b)))
    assert [layer.families for layer in ra.layers] == [layer.families for layer in rb.layers]
    assert all(not torch.equal(x, y) for x, y in zip(dw_weights(a), dw_weights(c)))


def test_seed_none_uses_global_rng(convnext):
    """seed=None draws the seed from torch's global RNG: reproducible under torch.manual_seed, recorded in the
    report, and re-running with that recorded seed gives the same weights."""
    a, b, c, d = (copy.deepcopy(convnext) for _ in range(4))
    torch.manual_seed(123)
    ra = dog_init_(a)
    torch.manual_seed(123)
    rb = dog_init_(b)
    assert isinstance(ra.seed, int) and ra.seed == rb.seed
    assert all(torch.equal(x, y) for x, y in zip(dw_weights(a), dw_weights(b)))
    dog_init_(c, seed=ra.seed)
    assert all(torch.equal(x, y) for x, y in zip(dw_weights(a), dw_weights(c)))
    torch.manual_seed(124)
    rd = dog_init_(d)
    assert rd.seed != ra.seed
    assert not torch.equal(dw_weights(a)[0], dw_weights(d)[0])


@pytest.mark.parametrize("seed", [1.5, 2**64, -1, "0"])
def test_bad_seeds_are_named(seed):
    with pytest.raises(ValueError, match=r"seed must be None or an integer in \[0, 2\*\*64\)"):
        dog_init_(single_dw_net(), seed=seed)


def test_report_json_and_summary(convnext, tmp_path):
    """to_dict() is JSON-serialisable and round-trips through to_json(); summary() names every layer and family."""
    model = copy.deepcopy(convnext)
    report = dog_init_(model, "paper", seed=0)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["seed"] == 0 and data["mix"] == pytest.approx(dog_init.resolve_mix("paper"))
    assert [layer["name"] for layer in data["layers"]] == [layer.name for layer in report.layers]
    report.to_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == data
    summary = report.summary()
    assert all(layer.name in summary for layer in report.layers)
    assert f"{len(report.layers)} depthwise layers" in summary
    total = sum(len(layer.families) for layer in report.layers)
    assert sum(report.counts().values()) == total

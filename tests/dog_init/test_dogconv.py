"""DoGConv2d, the learnable-DoG depthwise layer: rendering, bounds, the layer's geometry and arguments, gradients,
the eval-mode cache, torch.compile, autocast and meta construction. convert_ / bake_: test_dogconv_convert.py."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from dog_init import BOUNDS, FAMILIES, PARAMS, DoGConv2d, allocate, dog_init_, render, sample, sample_params
from dog_init.dogconv import DISCRETE
from dog_init.families import SPECS
from dog_init.mixes import render_assignment


def test_seeded_dog_init_is_pinned():
    # Written before render_assignment learnt to return parameters: the refactor must keep the random stream.
    model = nn.Sequential(nn.Conv2d(8, 16, 5, groups=8), nn.Conv2d(16, 16, 3, groups=16),
                          nn.Conv2d(16, 16, 7, groups=16, bias=False))
    report = dog_init_(model, "uniform", seed=1234)
    weights = [conv.weight.detach().double() for conv in model]
    index = [torch.arange(w.numel(), dtype=torch.float64).view_as(w) for w in weights]
    assert [w.sum().item() for w in weights] == pytest.approx(
        [-0.3499379171214582, 1.1715288775926145, 0.42376938633917316], rel=1e-5, abs=1e-6)
    assert [(w * torch.cos(i)).sum().item() for w, i in zip(weights, index)] == pytest.approx(
        [-0.8079602960283998, -0.44584220532915675, 0.043117371768347956], rel=1e-5, abs=1e-6)
    assert [w.abs().sum().item() for w in weights] == pytest.approx(
        [28.724065951262034, 20.566825825998173, 31.43643362226284], rel=1e-6)
    assert [layer.families[:4] for layer in report.layers] == [
        ["off_square", "off_cross", "off_centre", "on_centre"],
        ["off_square", "off_cross", "second_derivative", "on_square"],
        ["off_square", "on_centre", "on_cross", "first_derivative"]]


# --- render: device, dtype, differentiability ---------------------------------------------------------------------
def test_render_follows_the_parameters_dtype_and_device():
    params = sample_params("second_derivative", 6, generator=torch.Generator().manual_seed(0))
    k32 = render("second_derivative", 7, params)
    k64 = render("second_derivative", 7, {name: v.double() for name, v in params.items()})
    assert k32.dtype == torch.float32 and k64.dtype == torch.float64
    assert torch.allclose(k64.float(), k32, atol=1e-6)
    meta = render("on_cross", 5, {name: v.to("meta") for name, v in sample_params("on_cross", 3).items()})
    assert meta.device.type == "meta" and meta.shape == (3, 5, 5)
    assert render("on_centre", 5, sample_params("on_centre", 0)).shape == (0, 5, 5)


def test_render_assignment_returns_the_parameters_of_its_kernels():
    families = ["on_centre", "first_derivative", "on_centre", "off_square", "second_derivative"]
    plain = render_assignment(families, 5, torch.Generator().manual_seed(3))
    kernels, drawn = render_assignment(families, 5, torch.Generator().manual_seed(3), return_params=True)
    assert torch.equal(plain, kernels)
    assert drawn["on_centre"][0] == [0, 2] and sorted(drawn) == sorted(set(families))
    for family, (index, params) in drawn.items():
        assert torch.equal(render(family, 5, params), kernels[index])


def test_bounds_contain_the_sampling_ranges():
    for group, dists in PARAMS.items():
        continuous = {name for name in dists if name not in DISCRETE}
        assert set(BOUNDS[group]) == continuous
        for name in continuous:
            dist, bounds = dists[name], BOUNDS[group][name]
            if bounds is None:
                assert name == "theta"
            else:
                assert bounds[0] <= dist.low < dist.high <= bounds[1], (group, name)


# --- the layer -------------------------------------------------------------------------------------------------------
def test_layer_renders_mixes_sample_under_its_seed():
    layer = DoGConv2d(40, 7, families="paper", seed=5, bias=False)
    kernels, families = sample(40, 7, "paper", generator=torch.Generator().manual_seed(5))
    assert list(layer.channel_families) == families
    assert layer.family_counts() == allocate(40, "paper")
    weight = layer.render().squeeze(1)
    assert torch.allclose(weight / weight.flatten(1).norm(dim=1).view(-1, 1, 1), kernels, atol=1e-5)
    assert weight.std().item() == pytest.approx(1 / math.sqrt(3 * 49), rel=1e-4)   # scale "default"


def test_layer_geometry_matches_nn_conv2d():
    layer = DoGConv2d(6, 5, families="uniform", multiplier=2, stride=2, dilation=2, padding=3,
                      padding_mode="reflect", seed=0)
    conv = layer.to_conv2d()
    assert (conv.in_channels, conv.out_channels, conv.groups, conv.kernel_size) == (6, 12, 6, (5, 5))
    x = torch.randn(2, 6, 17, 17)
    assert torch.allclose(layer(x), conv(x), atol=1e-6)
    same = DoGConv2d(4, 3, padding="same", families="on_centre", seed=0)
    assert same(torch.randn(1, 4, 9, 9)).shape == (1, 4, 9, 9)
    assert set(same.channel_families) == {"on_centre"}
    explicit = DoGConv2d(3, 3, families=["on_square", "off_square", "on_square"], seed=0)
    assert explicit.family_counts() == {"on_square": 2, "off_square": 1}


@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=4, kernel_size=4), "odd integer >= 3.*4"),
    (dict(channels=4, kernel_size=5, families="blob"), "unknown mix preset 'blob'"),
    (dict(channels=4, kernel_size=5, families={"blob": 1.0}), "unknown family 'blob'"),
    (dict(channels=2, kernel_size=5, families=["on_centre", "ring"]), "unknown family 'ring'"),
    (dict(channels=4, kernel_size=5, families=["on_centre"]), "1 names for 4 output channels"),
    (dict(channels=0, kernel_size=5), "channels must be an integer >= 1, got 0"),
    (dict(channels=4, kernel_size=5, multiplier=1.5), "multiplier must be an integer >= 1, got 1.5"),
    (dict(channels=4, kernel_size=5, padding="full"), "unknown padding 'full'"),
    (dict(channels=4, kernel_size=5, padding_mode="mirror"), "unknown padding_mode 'mirror'"),
    (dict(channels=4, kernel_size=5, stride=1.5), "stride must be an int >= 0 or a pair of them, got 1.5"),
])
def test_bad_layer_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DoGConv2d(**kwargs)


def test_reparameterisation_keeps_every_parameter_in_range():
    layer = DoGConv2d(16, 5, families="uniform", seed=0)
    with torch.no_grad():
        for i, (name, p) in enumerate(layer.named_parameters()):
            if ".z_" in name:
                p.copy_(torch.randn(p.shape) * 40 + (60 if i % 2 else -60))
    for family, values in layer.family_params().items():
        bounds = BOUNDS[SPECS[family][0]]
        for name, value in values.items():
            if bounds.get(name):
                assert bounds[name][0] <= value.min() and value.max() <= bounds[name][1], (family, name)
    weight = layer.render()
    assert torch.isfinite(weight).all()
    assert torch.allclose(weight.flatten(1).norm(dim=1), layer.gain(), rtol=1e-5)
    d2 = {f: dict(v) for f, v in layer.family_params().items()}
    d2["second_derivative"]["kind"] = torch.full_like(d2["second_derivative"]["kind"], 5.0)
    with pytest.raises(ValueError, match=r"second_derivative kind must be one of \(0.0, 1.0, 2.0\), got \[5.0\]"):
        layer.set_family_params_(d2, layer.gain())
    with pytest.raises(ValueError, match="on_centre sigma values .* outside .* range"):
        layer.set_family_params_({f: {**v, "sigma": torch.full_like(v.get("sigma", v["dx"]), 9.0)}
                                  for f, v in layer.family_params().items()}, layer.gain())


def test_gradients_reach_every_parameter_and_match_finite_differences():
    layer = DoGConv2d(8, 5, families="uniform", multiplier=1, residual=True, seed=1, dtype=torch.float64)
    with torch.no_grad():
        layer.residual.normal_(0, 0.05)
    names = [name for name, _ in layer.named_parameters()]
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)

    def fn(*params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))

    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
    (fn(*params) * torch.randn(1, 8, 6, 6, dtype=torch.float64)).sum().backward()
    for name, p in zip(names, params):
        assert p.grad is not None and bool((p.grad != 0).any()), name


def test_no_kernel_vanishes_anywhere_in_bounds():
    # The corners of the box are where a kernel comes closest to vanishing (narrowest, furthest off-centre).
    for family in FAMILIES:
        group, fn, sign = SPECS[family]
        axes = [[0.0, 30.0, 45.0, 90.0] if BOUNDS[group].get(n) is None and n not in DISCRETE
                else list(BOUNDS[group][n]) if n not in DISCRETE else sorted(set(PARAMS[group][n].values))
                for n in PARAMS[group]]
        corners = torch.tensor(list(itertools.product(*axes)))
        params = {name: corners[:, i] for i, name in enumerate(PARAMS[group])}
        for size in (3, 7):
            raw = fn({**params, "_size": size, "_dtype": torch.float32})
            assert raw.flatten(1).norm(dim=1).min() > 1e-6, (family, size)
            assert torch.isfinite(render(family, size, params)).all()


def test_state_dict_moves_between_layers_of_the_same_mix():
    a, b = DoGConv2d(24, 5, residual=True, seed=0), DoGConv2d(24, 5, residual=True, seed=1)
    assert a.channel_families != b.channel_families   # same counts, other channels
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.render(), b.render())


# --- eval cache, compile, autocast, meta --------------------------------------------------------------------------
def test_eval_mode_caches_the_rendered_kernels_until_something_changes():
    layer = DoGConv2d(8, 5, seed=0)
    assert layer.weight is not layer.weight                 # training: rendered at every call
    layer.eval()
    with torch.no_grad():
        first = layer.weight
        assert layer.weight is first
        layer.families.on_centre.z_sigma.add_(0.5)          # an in-place change (as an optimiser step makes)
        second = layer.weight
    assert second is not first and not torch.equal(second, first)
    assert torch.equal(second, layer.render())
    with torch.inference_mode():
        assert layer.weight is second
    assert layer.weight.requires_grad                       # grad enabled: rendered, differentiable
    layer.train()
    assert layer._cache is None


@pytest.mark.slow
def test_torch_compile_traces_one_graph_and_matches_eager():
    model = nn.Sequential(DoGConv2d(8, 5, families="uniform", residual=True, seed=0))
    x = torch.randn(2, 8, 10, 10)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    assert torch.allclose(out, model(x), atol=1e-5)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).square().sum().backward()
    for g, p in zip(grads, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-5, rtol=1e-4)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_bf16_autocast_runs_the_conv_in_bf16_and_trains_float32_parameters():
    layer = DoGConv2d(8, 7, residual=True, seed=0)
    x = torch.randn(2, 8, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), layer(x), atol=0.05 * layer(x).abs().max().item())
    out.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in layer.parameters())


def test_meta_construction_then_to_empty_and_reset_equals_a_direct_build():
    with torch.device("meta"):
        layer = DoGConv2d(12, 5, multiplier=2, residual=True, seed=4)
    assert layer.log_gain.is_meta
    layer.to_empty(device="cpu")
    layer.reset_parameters()
    direct = DoGConv2d(12, 5, multiplier=2, residual=True, seed=4)
    assert layer.state_dict().keys() == direct.state_dict().keys()
    for key, value in direct.state_dict().items():
        assert torch.equal(layer.state_dict()[key], value), key
    with torch.device("meta"):
        loaded = DoGConv2d(12, 5, multiplier=2, residual=True, seed=9)
    loaded.load_state_dict(direct.state_dict(), assign=True)
    x = torch.randn(1, 12, 8, 8)
    assert torch.equal(loaded(x), direct(x))

"""DoGConv2d, convert_ and bake_: the learnable-DoG depthwise layer of issue 10."""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from timm.models.convmixer import ConvMixer
from torch import nn

from dog_init import (BOUNDS, FAMILIES, PARAMS, DoGConv2d, allocate, bake_, convert_, convert_reason, depthwise_stats,
                      dog_init_, render, sample, sample_params)
from dog_init.dogconv import DISCRETE
from dog_init.families import SPECS
from dog_init.mixes import render_assignment

ROOT = Path(__file__).resolve().parents[1]


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


# --- convert_ / bake_ ---------------------------------------------------------------------------------------------
class MultNet(nn.Module):
    """Depthwise convs of every geometry convert_ must keep, between a stem and a head it must leave alone."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.dw_mult = nn.Conv2d(6, 12, 5, stride=2, padding=4, dilation=2, groups=6, padding_mode="reflect")
        self.pw = nn.Conv2d(12, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.dw(self.pw(torch.relu(self.dw_mult(self.stem(x))))).mean(dim=(2, 3)))


def convmixer():
    return ConvMixer(dim=16, depth=2, kernel_size=5, patch_size=4, num_classes=4)


def twin(build):
    torch.manual_seed(0)
    a = build()
    b = build()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("build", [MultNet, convmixer])
def test_convert_starts_from_dog_init_kernels(build):
    model, reference = twin(build)
    report = convert_(model, "paper", seed=11, residual=True)
    ref_report = dog_init_(reference, "paper", seed=11)
    assert [(layer.name, layer.families) for layer in report.layers] == \
        [(layer.name, layer.families) for layer in ref_report.layers]
    modules = dict(reference.named_modules())
    for layer in report.layers:
        dog, conv = model.get_submodule(layer.name), modules[layer.name]
        assert isinstance(dog, DoGConv2d) and type(conv) is nn.Conv2d
        assert torch.allclose(dog.render(), conv.weight, rtol=1e-5, atol=1e-6 * conv.weight.abs().max().item())
        assert (dog.stride, dog.padding, dog.dilation, dog.padding_mode, dog.bias is None) == \
            (conv.stride, conv.padding, conv.dilation, conv.padding_mode, conv.bias is None)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(model(x), reference(x), atol=1e-5)


@pytest.mark.parametrize("include, match", [
    ("pw", r"include 'pw' selects no depthwise conv .* 'pw': not depthwise \(groups=1, kernel 1x1\)"),
    (["dw$", "stem"], r"include 'stem' selects no .*'stem': not depthwise"),
    ("nothing", "include 'nothing' selects no depthwise conv .* matches no nn.Conv2d"),
])
def test_convert_include_naming_a_non_depthwise_conv_raises(include, match):
    model = MultNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        convert_(model, include=include, seed=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())   # nothing touched


def test_convert_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown family 'blob'"):
        convert_(MultNet(), {"blob": 1.0}, seed=0)
    with pytest.raises(ValueError, match="swaps submodules"):
        convert_(nn.Conv2d(4, 4, 3, groups=4), seed=0)
    with pytest.raises(ValueError, match="swaps submodules"):
        bake_(DoGConv2d(4, 3, seed=0))


def test_convert_leaves_convs_it_cannot_swap_with_their_dog_init_kernels():
    from timm.layers import Conv2dSame

    model = nn.Sequential(Conv2dSame(4, 4, 3, groups=4), nn.Conv2d(4, 4, 3, groups=4))
    report = convert_(model, "on_off", seed=0, include=["1"])
    assert [layer.name for layer in report.layers] == ["1"] and isinstance(model[1], DoGConv2d)
    assert ("0", "not matched by include") in report.skipped
    with pytest.raises(ValueError, match="none of the 1 selected .* '0': dog_init_ kernels, not converted: "
                                         "Conv2dSame overrides"):
        convert_(model, "on_off", seed=0)
    assert type(model[0]) is Conv2dSame
    assert convert_reason(model[0]).startswith("Conv2dSame overrides")


def test_convert_train_bake_gives_the_same_network_and_a_loadable_state_dict():
    model, fresh = twin(MultNet)
    convert_(model, "uniform", seed=3, residual=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert all(not torch.equal(start[k], v) for k, v in model.state_dict().items() if "z_" in k or "residual" in k)
    assert depthwise_stats(model)["residual_norm"] > 0
    model.eval()
    with torch.no_grad():
        before = model(x)
    assert bake_(model) is model
    assert type(model.dw_mult) is nn.Conv2d and type(model.dw) is nn.Conv2d
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-5)
        assert model.state_dict().keys() == fresh.state_dict().keys()
        fresh.load_state_dict(model.state_dict())     # strict: the original architecture's keys and shapes
        assert torch.allclose(fresh.eval()(x), before, atol=1e-5)


def test_depthwise_stats_counts_plain_and_dogconv_layers():
    model = MultNet()
    plain = depthwise_stats(model)
    assert plain["plain_layers"] == 2 and plain["dogconv_layers"] == 0
    assert plain["plain_params"] == 12 * 25 + 12 + 8 * 9 == plain["depthwise_params"]
    convert_(model, {"on_centre": 1, "on_square": 1}, include="dw_mult", residual=True, seed=0)
    stats = depthwise_stats(model)
    assert stats["plain_layers"] == 1 and stats["plain_params"] == 8 * 9
    # dw_mult: 6 on_centre x 7 + 6 on_square x 5 parameters, gain and bias per channel, a 5x5 residual
    assert stats["dogconv_params"] == 6 * 7 + 6 * 5 + 12 + 12 + 12 * 25
    assert stats["dogconv_as_plain_params"] == 12 * 25 + 12
    assert stats["residual_norms"] == {"dw_mult": 0.0}


# --- export and DDP -----------------------------------------------------------------------------------------------
def test_baked_and_unbaked_models_export():
    model = convmixer().eval()
    convert_(model, "paper", seed=0, residual=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    program = torch.export.export(model, (x,))                       # DoGConv2d itself traces (it renders)
    assert torch.allclose(program.module()(x), expected, atol=1e-5)
    bake_(model)
    program = torch.export.export(model, (x,))
    assert torch.allclose(program.module()(x), expected, atol=1e-5)
    assert not any("sigmoid" in str(node.target) for node in program.graph.nodes)   # baked: plain convs


def test_baked_model_exports_to_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from onnx.reference import ReferenceEvaluator

    model = convmixer().eval()
    convert_(model, "paper", seed=0)
    x = torch.randn(1, 3, 16, 16)
    bake_(model)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
    onnx.checker.check_model(str(path))
    (out,) = ReferenceEvaluator(str(path)).run(None, {ReferenceEvaluator(str(path)).input_names[0]: x.numpy()})
    assert torch.allclose(torch.from_numpy(out), expected, atol=1e-4)


def test_ddp_through_accelerate_keeps_processes_in_sync(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this python")
    out = tmp_path / "ddp.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "tests/ddp_dogconv.py"),
                          str(out)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == 2 and "MULTI_CPU" in result["distributed"] and result["is_dogconv"]
    assert result["max_param_diff"] == 0.0 and result["moved"] > 1e-4 and result["residual_norm"] > 0
    assert result["losses"][-1] < result["losses"][0]


def test_convert_follows_a_per_layer_profile_like_dog_init_():
    from dog_init import LayerProfile, Profile

    profile = Profile("test", (LayerProfile("first", 5, 0.0, 16, 1.0, {"on_centre": 1.0}),
                               LayerProfile("last", 5, 1.0, 16, 1.0, {"first_derivative": 0.5, "off_cross": 0.5})),
                      {"on_centre": 0.5, "first_derivative": 0.25, "off_cross": 0.25})
    model, reference = twin(convmixer)
    report = convert_(model, profile, seed=2)
    dog_init_(reference, profile, seed=2)
    assert set(report.layers[0].families) == {"on_centre"}
    assert set(report.layers[1].families) == {"first_derivative", "off_cross"}
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(model(x), reference(x), atol=1e-5)

"""convert_ and bake_: a model's depthwise convs become DoGConv2d layers that start from dog_init_'s kernels, train,
and bake back into plain convs with the original state-dict keys; depthwise_stats, export (torch.export, ONNX) and
DDP through Accelerate (two processes under torchrun, tests/helpers/ddp_dogconv.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from timm.models.convmixer import ConvMixer
from torch import nn

from dog_init import DoGConv2d, bake_, convert_, convert_reason, depthwise_stats, dog_init_
from tests.helpers import ROOT


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


@pytest.mark.slow
def test_ddp_through_accelerate_keeps_processes_in_sync(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this python")
    out = tmp_path / "ddp.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    script = ROOT / "tests" / "helpers" / "ddp_dogconv.py"
    run = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(out)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
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

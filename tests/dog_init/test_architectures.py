"""dog_init_ on real architectures (timm, torchvision, a hand-written module): exactly the eligible depthwise convs
change, reported with their reasons and families, in place."""
from __future__ import annotations

import copy
import json
import math

import pytest
import timm
import torch
import torchvision
from timm.models.convmixer import ConvMixer
from torch import nn

from dog_init import allocate, default_std, depthwise_reason, dog_init_, find_depthwise
from tests.helpers.inits import UserNet, assert_untouched


def convmixer_tiny():
    # timm.create_model("convmixer_768_32", dim=64, ...) fails (the entrypoint passes dim itself), so build
    # the same architecture directly at a small width / depth.
    return ConvMixer(dim=64, depth=2, kernel_size=7, patch_size=7, act_layer=nn.ReLU)


TIMM = ["convnext_atto", "convnextv2_atto", "efficientnet_b0", "tf_efficientnet_lite0", "mobilenetv2_050",
        "mobilenetv3_small_050", "mobilenetv4_conv_small", "mixnet_s", "mnasnet_small", "ghostnet_050",
        "repvit_m0_9", "fastvit_t8", "edgenext_xx_small", "lcnet_050", "inception_next_atto", "mobileone_s0",
        "efficientvit_m0"]


BUILDERS = {name: (lambda name=name: timm.create_model(name, pretrained=False)) for name in TIMM}
BUILDERS.update({
    "convmixer_tiny": convmixer_tiny,
    "tv_mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None),
    "tv_mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(weights=None),
    "tv_efficientnet_b0": lambda: torchvision.models.efficientnet_b0(weights=None),
    "user": UserNet,
})

# Architecture-specific facts the sweep must see (reason substrings among the skips, kernel sizes initialised).
EXPECTED_SKIP = {"repvit_m0_9": "1x1 depthwise kernel", "mobileone_s0": "1x1 depthwise kernel",
                 "inception_next_atto": "non-square kernel", "user": "grouped, not depthwise"}
EXPECTED_SIZES = {"mixnet_s": {3, 5, 7, 9, 11}, "convnext_atto": {7}, "convmixer_tiny": {7},
                  "edgenext_xx_small": {3, 5, 7, 9}, "user": {3, 5}}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return BUILDERS[name]()


def conv_names(model):
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_architecture_sweep(arch):
    """dog_init_ changes exactly the eligible depthwise convs, reports them correctly (name, kernel size, one
    family per output channel in the mix's exact counts, default std) and leaves everything else bit-identical."""
    assert arch not in TIMM or timm.is_model(arch)
    model = build(arch)
    before = copy.deepcopy(model)
    eligible, skipped = find_depthwise(model)
    assert eligible, "the sweep should only hold models with depthwise convs"

    report = dog_init_(model, "paper", seed=0)

    # the report lists every eligible conv, in module order, with the right metadata
    assert [layer.name for layer in report.layers] == [name for name, _ in eligible]
    for layer, (name, conv) in zip(report.layers, eligible):
        assert conv is model.get_submodule(name)
        assert layer.kernel_size == conv.kernel_size[0] == conv.kernel_size[1]
        assert len(layer.families) == conv.out_channels
        assert layer.counts() == {f: c for f, c in allocate(conv.out_channels, "paper").items() if c}
        old = before.get_submodule(name).weight
        assert not torch.equal(conv.weight, old), f"{name} unchanged"
        assert torch.isfinite(conv.weight).all()
        # summed branches (MobileOne, FastViT) apply one kernel together: that kernel has the default std
        members = [model.get_submodule(n) for n in [name, *layer.summed_with]]
        big = max(members, key=lambda c: c.kernel_size[0])
        assert all(layer.families == next(x for x in report.layers if x.name == n).families
                   for n in layer.summed_with)
        applied = sum(nn.functional.pad(c.weight, [(big.kernel_size[0] - c.kernel_size[0]) // 2] * 4) for c in members)
        assert math.isclose(applied.std().item(), default_std(big), rel_tol=1e-4), name

    # everything else is bit-identical
    assert_untouched(model, before, changed={f"{layer.name}.weight" for layer in report.layers})

    # every nn.Conv2d is either initialised or skipped with its reason; stems (RGB input) are skipped
    assert report.skipped == skipped
    done = {layer.name for layer in report.layers}
    assert done.isdisjoint(name for name, _ in report.skipped)
    assert done | {name for name, _ in report.skipped} == set(conv_names(model))
    for name, reason in report.skipped:
        module = model.get_submodule(name)
        assert reason == depthwise_reason(module) is not None
        assert not (module.groups == module.in_channels > 1 and module.kernel_size[0] == module.kernel_size[1]
                    and module.kernel_size[0] >= 3 and module.kernel_size[0] % 2 == 1)
    stems = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3]
    assert stems and set(stems) <= {name for name, _ in report.skipped}
    assert any("not depthwise" in reason for _, reason in report.skipped)
    if arch in EXPECTED_SKIP:
        assert any(EXPECTED_SKIP[arch] in reason for _, reason in report.skipped), report.skipped
    if arch in EXPECTED_SIZES:
        assert {layer.kernel_size for layer in report.layers} == EXPECTED_SIZES[arch]

    # the report serialises and summarises
    assert report.model == type(model).__name__ and report.seed == 0
    json.dumps(report.to_dict())
    summary = report.summary()
    assert isinstance(summary, str)
    for layer in report.layers:
        assert layer.name in summary


def test_user_module_reasons_and_multiplier():
    """The hand-written module: the dilated multiplier-2 conv gets 16 kernels; each other conv is skipped
    with the matching reason."""
    model = UserNet()
    report = dog_init_(model, "paper", seed=1)
    assert [(layer.name, layer.kernel_size, len(layer.families)) for layer in report.layers] == \
        [("dw_mult", 5, 16), ("dw", 3, 32)]
    reasons = dict(report.skipped)
    assert reasons["stem"].startswith("not depthwise") and reasons["pw"].startswith("not depthwise")
    assert reasons["grouped"].startswith("grouped") and "groups=4" in reasons["grouped"]
    assert "1x1" in reasons["dw_1x1"]
    assert "non-square" in reasons["band"] and "1x7" in reasons["band"]
    assert "even" in reasons["even"] and "4x4" in reasons["even"]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_weights_follow_reported_families():
    """Channel i's kernel belongs to report.families[i]: with the on/off mix the centre sign follows the label,
    in a multiplier-2 conv and in a plain depthwise conv."""
    model = UserNet()
    report = dog_init_(model, "on_off", scale="unit", seed=2)
    for layer in report.layers:
        weight = model.get_submodule(layer.name).weight
        c = layer.kernel_size // 2
        centre = weight[:, 0, c, c]
        assert [v > 0 for v in centre.tolist()] == [f == "on_centre" for f in layer.families]


def test_in_place_same_parameter_objects():
    """The weights are written in place: same Parameter objects, storage, dtype and requires_grad."""
    model = UserNet().double()
    weight = model.dw.weight
    ptr = weight.data_ptr()
    dog_init_(model, seed=0)
    assert model.dw.weight is weight and weight.data_ptr() == ptr
    assert weight.dtype == torch.float64 and weight.requires_grad and weight.grad is None
    assert math.isclose(weight.std().item(), default_std(model.dw), rel_tol=1e-4)

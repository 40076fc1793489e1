"""dog_init_ on real architectures (timm, torchvision, a hand-written module) and the initialiser registry."""
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

import dog_init
from dog_init import allocate, default_std, depthwise_reason, dog_init_, find_depthwise, get_init


class UserNet(nn.Module):
    """Every kind of conv dog_init_ has to tell apart, including a dilated depthwise conv with multiplier 2."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw_mult = nn.Conv2d(8, 16, 5, padding=4, dilation=2, groups=8)     # eligible: multiplier 2, dilation 2
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)              # grouped, not depthwise
        self.dw_1x1 = nn.Conv2d(16, 16, 1, groups=16)                         # 1x1 depthwise
        self.band = nn.Conv2d(16, 16, (1, 7), padding=(0, 3), groups=16)      # non-square
        self.even = nn.Conv2d(16, 16, 4, padding=1, groups=16)                # even kernel
        self.pw = nn.Conv2d(16, 32, 1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)      # eligible
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.bn(self.dw_mult(self.stem(x)))
        x = self.pw(self.even(self.band(self.dw_1x1(self.grouped(x)))))
        return self.head(self.dw(x).mean(dim=(2, 3)))


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


def assert_untouched(model, before, changed=()):
    """Every parameter and buffer not named in ``changed`` is bit-identical to ``before``'s."""
    old = dict(before.named_parameters()) | dict(before.named_buffers())
    new = dict(model.named_parameters()) | dict(model.named_buffers())
    assert old.keys() == new.keys()
    for key, value in new.items():
        if key not in changed:
            assert torch.equal(value, old[key]), f"{key} changed"


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


# --- scale ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def convnext():
    return build("convnext_atto")


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


def test_default_std_formula():
    """default_std is the std of PyTorch's default conv init, 1 / sqrt(3 fan_in) (checked empirically)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(512, 512, 7, groups=512)
    assert math.isclose(default_std(conv), 1 / math.sqrt(3 * 49))
    assert math.isclose(conv.weight.std().item(), default_std(conv), rel_tol=0.02)
    conv = nn.Conv2d(8, 16, 5, groups=8)
    assert math.isclose(default_std(conv), 1 / math.sqrt(3 * 25))


# --- include / exclude ---------------------------------------------------------------------------------------------
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


# --- errors on the model / mix -------------------------------------------------------------------------------------
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


# --- seeds ---------------------------------------------------------------------------------------------------------
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


# --- registry ------------------------------------------------------------------------------------------------------
def test_registry_dog():
    """get_init('dog') is dog_init_; the registry lists the built-in names."""
    assert get_init("dog") is dog_init_
    assert {"dog", "default", "kaiming"} <= set(dog_init.list_inits())


@pytest.mark.parametrize("name", ["default", "kaiming"])
def test_registry_baselines_leave_model(name):
    """'default' and 'kaiming' leave the model bit-identical (the constructor's init is the baseline)."""
    model = UserNet()
    before = copy.deepcopy(model)
    get_init(name)(model, mix="paper", seed=0)
    assert_untouched(model, before)


def test_registry_callable_and_unknown():
    """A callable passes through; an unknown name raises ValueError listing the allowed names."""
    def mine(model, **kwargs):
        return None
    assert get_init(mine) is mine
    with pytest.raises(ValueError) as info:
        get_init("xavier_dog")
    message = str(info.value)
    assert "xavier_dog" in message
    for name in dog_init.list_inits():
        assert name in message


def test_register_duplicate():
    """Registering a taken name raises ValueError; a new name can be registered and fetched."""
    with pytest.raises(ValueError, match="dog"):
        dog_init.register_init("dog", lambda model, **kw: None)
    assert get_init("dog") is dog_init_
    name = "test_registry_tmp_init"
    if name not in dog_init.list_inits():
        fn = dog_init.register_init(name, lambda model, **kw: None)
        assert get_init(name) is fn
        with pytest.raises(ValueError, match=name):
            dog_init.register_init(name, fn)

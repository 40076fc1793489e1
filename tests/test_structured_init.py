"""Issue 17 §1: the published depthwise initialisers beside DoG (covariance, impulse, box, gaussian, bank): the
registry, what each kernel looks like, scales, seeds, untouched tensors, argument errors, summed branches and
weight norm."""
from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.models.convmixer import ConvMixer
from torch import nn

import dog_init
from dog_init import (bank_init_, box_init_, covariance_init_, default_std, find_depthwise, gaussian_init_, get_init,
                      impulse_init_)
from dog_init.bank import dihedral
from dog_init.covariance import gaussian_covariance, kernel_covariance
from dog_init.sources import resize_covariance, resize_kernels
from dog_init.weight_access import effective_weight

KERNELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kernels"
EFFNET5, MASTER7 = KERNELS / "effnet-lite0_k5.npy", KERNELS / "master-key-filters_k7.npy"
NEW = ["covariance", "impulse", "box", "gaussian", "bank"]
MODELS = ["convnext_atto", "mobilenetv2_050"]


def synthetic_bank(k: int = 7, m: int = 5) -> np.ndarray:
    """m smooth, asymmetric k x k filters (no filter equals another under any symmetry)."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(m, k, k)).cumsum(axis=1).cumsum(axis=2).astype(np.float32)


def run(name: str, model: nn.Module, **kwargs):
    """get_init(name)(model, ...) with the source each needs."""
    if name == "bank" and "source" not in kwargs:
        kwargs["source"] = synthetic_bank()
    if name == "box" and "taps" not in kwargs:
        kwargs["taps"] = 3
    return get_init(name)(model, **kwargs)


def dw_net(k: int = 5, c: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, c, 1), nn.Conv2d(c, c, k, padding=k // 2, groups=c),
                         nn.Conv2d(c, c, 3, padding=1, groups=c))


def kernels(model) -> list[torch.Tensor]:
    """The applied kernels (C, k, k) of every eligible depthwise conv, float64."""
    return [effective_weight(conv).double().reshape(conv.out_channels, *conv.kernel_size)
            for _, conv in find_depthwise(model)[0]]


def neighbour_corr(w: torch.Tensor) -> float:
    """Correlation, over kernels, of horizontally and vertically neighbouring taps (pooled)."""
    a = torch.cat([w[:, :, :-1].flatten(), w[:, :-1, :].flatten()])
    b = torch.cat([w[:, :, 1:].flatten(), w[:, 1:, :].flatten()])
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def tap_corr(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64).reshape(len(w), -1)
    return np.corrcoef(w.T)


def rel_fro(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before, changed=()):
    now = model.state_dict()
    assert now.keys() == before.keys()
    for key, value in now.items():
        if key not in changed:
            assert torch.equal(value, before[key]), f"{key} changed"


# --- registry -----------------------------------------------------------------------------------------------------
def test_list_inits_has_all_eight():
    assert set(dog_init.list_inits()) >= {"default", "kaiming", "dog", "covariance", "impulse", "box", "gaussian",
                                          "bank"}
    assert get_init("covariance") is covariance_init_ and get_init("bank") is bank_init_
    assert get_init("impulse") is impulse_init_ and get_init("box") is box_init_
    assert get_init("gaussian") is gaussian_init_


@pytest.mark.parametrize("name", NEW)
def test_registry_entries_take_the_dog_call_shape(name):
    model = dw_net()
    report = run(name, model, scale="default", include=None, exclude=None, seed=3)
    assert isinstance(report, dog_init.InitReport) and report.seed == 3 and report.scale == "default"
    assert [layer.name for layer in report.layers] == ["1", "2"]
    assert all(len(layer.families) == 8 for layer in report.layers)
    assert report.summary() and report.to_dict()["layers"][0]["families"]


def test_bank_needs_a_source():
    with pytest.raises(ValueError, match=r"source="):
        get_init("bank")(dw_net())


# --- what the kernels look like -----------------------------------------------------------------------------------
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


def synthetic_kernels(n: int = 6000, k: int = 5) -> np.ndarray:
    """Kernels with a known, structured tap covariance (a random PSD matrix mixed with a smooth field)."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(k * k, 6))
    cov = a @ a.T + 4 * gaussian_covariance(k, 1.5).numpy()
    return (rng.multivariate_normal(np.zeros(k * k), cov, size=n) + rng.normal(size=(1, k * k))).reshape(n, k, k)


@pytest.mark.parametrize("real", [False, True])
def test_covariance_from_a_source_reproduces_its_tap_correlation(real):
    if real and not EFFNET5.is_file():
        pytest.skip(f"{EFFNET5} not present (shared data)")
    source = np.load(EFFNET5) if real else synthetic_kernels()
    model = nn.Sequential(nn.Conv2d(4096, 4096, 5, padding=2, groups=4096))
    covariance_init_(model, source=EFFNET5 if real else source, seed=0)
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


def as_variants(bank: np.ndarray, k: int) -> torch.Tensor:
    """(16 M, k * k) unit-norm: every filter (resized to k) under the 8 symmetries and both signs."""
    filters = resize_kernels(torch.from_numpy(np.asarray(bank, dtype=np.float64)), k)
    out = torch.cat([dihedral(filters, i) for i in range(8)]).flatten(1)
    out = out / out.norm(dim=1, keepdim=True)
    return torch.cat([out, -out])


def assert_bank_kernels(w: torch.Tensor, bank: np.ndarray, symmetries: bool = True):
    variants = as_variants(bank, w.shape[-1])
    if not symmetries:
        variants = variants[:len(bank)]
    unit = w.flatten(1) / w.flatten(1).norm(dim=1, keepdim=True)
    distance = torch.cdist(unit, variants).min(dim=1).values
    assert distance.max() < 1e-6


@pytest.mark.parametrize("which", ["master", "synthetic"])
def test_every_bank_kernel_is_a_bank_filter_up_to_scale_and_symmetry(which):
    if which == "master" and not MASTER7.is_file():
        pytest.skip(f"{MASTER7} not present (shared data)")
    bank = np.load(MASTER7) if which == "master" else synthetic_bank()
    model = timm.create_model("convnext_atto")   # 7x7 depthwise
    report = bank_init_(model, source=MASTER7 if which == "master" else bank, seed=0)
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


# --- scales, seeds, untouched tensors -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NEW)
def test_scales(name):
    for scale, norm in [("unit", 1.0), (0.37, 0.37)]:
        model = dw_net()
        run(name, model, scale=scale, seed=0)
        for w in kernels(model):
            assert torch.allclose(w.flatten(1).norm(dim=1), torch.full((len(w),), norm, dtype=torch.float64),
                                  rtol=1e-5)
    model = dw_net()
    old = [w.std().item() for w in kernels(model)]
    run(name, model, scale="match", seed=0)
    for w, std in zip(kernels(model), old):
        assert math.isclose(w.square().mean().sqrt().item(), std, rel_tol=1e-5)
    model = dw_net()
    run(name, model, seed=0)
    for (_, conv), w in zip(find_depthwise(model)[0], kernels(model)):
        assert math.isclose(w.square().mean().sqrt().item(), default_std(conv), rel_tol=1e-5)


@pytest.mark.parametrize("name", NEW)
def test_seeded_reproducible_and_other_tensors_bit_for_bit(name):
    base = timm.create_model("mobilenetv2_050")
    first, second, third = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    before = state(base)
    report = run(name, first, seed=11)
    run(name, second, seed=11)
    run(name, third, seed=12)
    changed = {f"{layer.name}.weight" for layer in report.layers}
    assert_same_state(first, before, changed)        # BN stats, biases, pointwise convs, the head: untouched
    assert all(not torch.equal(first.state_dict()[k], before[k]) for k in changed)
    assert_same_state(second, state(first))
    assert any(not torch.equal(third.state_dict()[k], first.state_dict()[k]) for k in changed)
    torch.manual_seed(5)                              # seed=None: drawn from torch's global RNG, and reported
    a = copy.deepcopy(base)
    drawn = run(name, a).seed
    torch.manual_seed(5)
    b = copy.deepcopy(base)
    assert run(name, b).seed == drawn
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
        run(name, model, **kwargs)
    assert_same_state(model, before)


def test_a_model_must_be_a_module():
    with pytest.raises(TypeError, match=r"nn.Module.*timm.create_model"):
        impulse_init_("convnext_atto")
    with pytest.raises(ValueError, match=r"no depthwise"):
        gaussian_init_(nn.Sequential(nn.Conv2d(3, 8, 3)))


# --- summed branches and weight norm ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobileone():
    return timm.create_model("mobileone_s0", pretrained=False)


@pytest.mark.parametrize("name", NEW)
def test_mobileone_branches_share_one_kernel_per_channel(mobileone, name):
    model = copy.deepcopy(mobileone)
    bank = synthetic_bank(3)
    report = run(name, model, seed=0, **({"source": bank} if name == "bank" else {}))
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


def test_fastvit_large_and_small_kernel_sum_to_one_covariance_draw():
    model = timm.create_model("fastvit_t8", pretrained=False)
    covariance_init_(model, seed=0)
    block = model.stages[1].downsample.proj[0]
    large, small = block.large_conv.conv.weight.detach(), block.small_conv.conv.weight.detach()
    pad = (large.shape[-1] - small.shape[-1]) // 2
    assert torch.equal(large[..., pad:-pad, pad:-pad], small)
    applied = large + nn.functional.pad(small, [pad] * 4)
    assert math.isclose(applied.square().mean().sqrt().item(), default_std(block.large_conv.conv), rel_tol=1e-4)


@pytest.mark.parametrize("api", ["parametrizations", "hook"])
@pytest.mark.parametrize("name", NEW)
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
    report = run(name, normed, seed=3)
    run(name, plain, seed=3)
    assert [layer.name for layer in report.layers] == ["1", "2"]
    assert not torch.allclose(normed[1].weight.detach(), before)
    for i in (1, 2):
        assert torch.allclose(normed[i].weight.detach(), plain[i].weight.detach(), rtol=1e-5, atol=1e-7)
    normed(torch.zeros(1, 3, 9, 9))                      # the hook API recomputes the weight here
    for i in (1, 2):
        assert torch.allclose(normed[i].weight.detach(), plain[i].weight.detach(), rtol=1e-5, atol=1e-7)


def test_spectral_norm_is_refused_before_anything_changes():
    model = dw_net()
    torch.nn.utils.parametrizations.spectral_norm(model[2])
    before = state(model)
    with pytest.raises(ValueError, match=r"layer '2'.*parametrisation"):
        gaussian_init_(model, seed=0)
    assert_same_state(model, before)


def test_convmixer_and_report_summary():
    model = ConvMixer(dim=64, depth=3, kernel_size=7, patch_size=7, act_layer=nn.ReLU)
    report = bank_init_(model, source=synthetic_bank(7, 4), seed=0)
    assert len(report.layers) == 3 and report.counts() == {f"bank:{i}": 48 for i in range(4)}
    assert report.mix == {f"bank:{i}": 0.25 for i in range(4)}
    text = report.summary()
    assert "bank:0" in text and "3 depthwise layers initialised" in text

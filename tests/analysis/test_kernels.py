"""analysis.kernels.extract: depthwise kernel extraction from modules, timm names, state dicts and kernel arrays."""
import json
from collections import Counter

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from analysis.kernels.extract import KernelGroup, KernelSet, extract_depthwise, load_kernel_files
from dog_init import find_depthwise



@pytest.fixture(scope="module")
def mixnet():
    torch.manual_seed(0)
    return timm.create_model("mixnet_s", pretrained=False).eval()


@pytest.fixture(scope="module")
def atto():
    torch.manual_seed(1)
    return timm.create_model("convnext_atto", pretrained=False).eval()


def assert_same(a: KernelSet, b: KernelSet):
    assert a.sizes == b.sizes
    for k in a.sizes:
        np.testing.assert_array_equal(a[k].kernels, b[k].kernels)
        np.testing.assert_array_equal(a[k].layer_index, b[k].layer_index)
        assert a[k].layer_names == b[k].layer_names


@pytest.mark.parametrize("name", ["atto", "mixnet"])
def test_module_counts_match_find_depthwise(name, request):
    model = request.getfixturevalue(name)
    eligible, _ = find_depthwise(model)
    ks = extract_depthwise(model)
    sizes = Counter()
    for _, conv in eligible:
        sizes[conv.kernel_size[0]] += conv.out_channels
    assert ks.sizes == sorted(sizes) and len(ks) == sum(sizes.values())
    for k, n in sizes.items():
        g = ks[k]
        assert g is ks.get(k) and isinstance(g, KernelGroup) and g.size == k
        assert g.kernels.shape == (n, k, k) and g.kernels.dtype == np.float32
        assert g.layer_names == [m for m, c in eligible if c.kernel_size[0] == k]
        assert g.layer_index.shape == (n,) and g.degenerate.shape == (n,) and not g.degenerate.any()
    name0, conv0 = eligible[0]
    k0 = conv0.kernel_size[0]
    np.testing.assert_array_equal(ks[k0].layer(name0), conv0.weight.detach().numpy().reshape(-1, k0, k0))
    assert "kernels" in ks.summary() and type(model).__name__ in repr(ks)
    if name == "mixnet":
        assert ks.sizes == [3, 5, 7, 9, 11]


def test_state_dict_files_match_module(mixnet, tmp_path):
    ref = extract_depthwise(mixnet)
    sd = {k: v.contiguous() for k, v in mixnet.state_dict().items()}
    torch.save(sd, tmp_path / "m.pth")
    save_file(sd, str(tmp_path / "m.safetensors"))
    torch.save({"model_ema": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, tmp_path / "wrapped.pt")
    torch.save({"state_dict": sd}, tmp_path / "m.bin")
    for file in ["m.pth", "m.safetensors", "wrapped.pt", "m.bin"]:
        assert_same(extract_depthwise(tmp_path / file), ref)
        assert extract_depthwise(str(tmp_path / file)).source == str(tmp_path / file)


def test_timm_name_with_checkpoint_offline(atto, tmp_path):
    save_file({k: v.contiguous() for k, v in atto.state_dict().items()}, str(tmp_path / "atto.safetensors"))
    torch.save({"model": atto.state_dict()}, tmp_path / "atto.pt")
    ref = extract_depthwise(atto)
    for ckpt in ["atto.safetensors", "atto.pt"]:
        ks = extract_depthwise("timm:convnext_atto.d2_in1k", checkpoint=tmp_path / ckpt)
        assert_same(ks, ref)
        assert ks.source.startswith("timm:convnext_atto.d2_in1k")


def test_timm_checkpoint_of_other_model_rejected(mixnet, tmp_path):
    torch.save(mixnet.state_dict(), tmp_path / "mixnet.pt")
    with pytest.raises(ValueError, match="does not fit timm model 'convnext_atto'"):
        extract_depthwise("timm:convnext_atto", checkpoint=tmp_path / "mixnet.pt")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_models_give_float32(atto, dtype, tmp_path):
    ref = extract_depthwise(atto)
    half = timm.create_model("convnext_atto", pretrained=False)
    half.load_state_dict(atto.state_dict())
    half.to(dtype)
    expected = {k: torch.from_numpy(ref[k].kernels).to(dtype).float().numpy() for k in ref.sizes}
    save_file({k: v.contiguous() for k, v in half.state_dict().items()}, str(tmp_path / "h.safetensors"))
    for ks in [extract_depthwise(half), extract_depthwise(tmp_path / "h.safetensors")]:
        for k in ref.sizes:
            assert ks[k].kernels.dtype == np.float32
            np.testing.assert_array_equal(ks[k].kernels, expected[k])


def test_channel_multiplier_and_skips():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 8, 5, groups=4), nn.Conv2d(8, 8, 1, groups=8),
                          nn.Conv2d(8, 8, (1, 7), groups=8), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 8, 4, groups=8))
    ks = extract_depthwise(model)
    assert ks.sizes == [5] and ks[5].kernels.shape == (8, 5, 5) and ks[5].layer_names == ["1"]


def test_npy_npz_and_layers_json(tmp_path):
    rng = np.random.default_rng(0)
    a3, b3, a5 = (rng.normal(size=s).astype(np.float64) for s in [(6, 3, 3), (4, 3, 3), (5, 5, 5)])
    np.save(tmp_path / "m_k3.npy", np.concatenate([a3, b3]))
    (tmp_path / "m_k3.layers.json").write_text(json.dumps([{"layer": "first", "start": 0, "stop": 6},
                                                           {"layer": "second", "start": 6, "stop": 10}]))
    np.save(tmp_path / "m_k5.npy", a5)
    ks = extract_depthwise([tmp_path / "m_k3.npy", str(tmp_path / "m_k5.npy")])
    assert ks.sizes == [3, 5] and len(ks) == 15
    assert ks[3].layer_names == ["first", "second"] and ks[3].layer_counts() == {"first": 6, "second": 4}
    np.testing.assert_array_equal(ks[3].layer("second"), b3.astype(np.float32))
    assert ks[5].layer_names == ["m_k5"] and ks[5].kernels.dtype == np.float32
    np.savez(tmp_path / "z.npz", conv_a=a3, conv_b=a5)
    z = extract_depthwise(tmp_path / "z.npz")
    assert z[3].layer_names == ["conv_a"] and z[5].layer_names == ["conv_b"]
    assert_same(load_kernel_files(str(tmp_path / "m_k*.npy")), ks)
    arr = KernelSet.from_array(a3, name="x", layers=[("p", 0, 2), ("q", 2, 6)])
    assert arr[3].layer_names == ["p", "q"] and arr.source == "x" and len(arr) == 6
    (tmp_path / "out").mkdir()
    written = ks.save(tmp_path / "out" / "m")
    assert [p.name for p in written] == ["m_k3.npy", "m_k5.npy"]
    assert_same(extract_depthwise(written), ks)


def test_concatenating_sources_prefixes_colliding_names(atto):
    both = extract_depthwise([atto, atto])
    assert len(both) == 2 * len(extract_depthwise(atto))
    names = both[7].layer_names
    assert len(names) == len(set(names)) == 24 and names[0].startswith("ConvNeXt#0/")
    assert extract_depthwise([extract_depthwise(atto)])[7].layer_names == extract_depthwise(atto)[7].layer_names


def test_degenerate_kernels_kept_and_marked(tmp_path):
    arr = np.random.default_rng(1).normal(size=(5, 3, 3)).astype(np.float32)
    arr[1] = 0.0
    arr[3, 1, 1] = np.nan
    arr[4, 0, 0] = np.inf
    np.save(tmp_path / "d.npy", arr)
    for ks in [extract_depthwise(tmp_path / "d.npy"), KernelSet.from_array(arr)]:
        g = ks[3]
        assert len(g) == 5 and g.degenerate.tolist() == [False, True, False, True, True]
        assert g.n_degenerate == ks.n_degenerate == 3 and g.valid.shape == (2, 3, 3)
        assert "3 degenerate" in repr(ks) and "3 degenerate" in ks.summary()


def test_errors(tmp_path, atto):
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        extract_depthwise(tmp_path / "nope.npy")
    with pytest.raises(FileNotFoundError, match="timm:convnext_atto"):
        extract_depthwise("convnext_atto")
    (tmp_path / "k.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"'\.txt'.*\.npy \.npz \.pt \.pth \.bin \.safetensors.*timm:NAME"):
        extract_depthwise(tmp_path / "k.txt")
    with pytest.raises(ValueError, match="directory"):
        extract_depthwise(tmp_path)
    with pytest.raises(ValueError, match="unknown timm model 'convnxt_atto'.*convnext_atto"):
        extract_depthwise("timm:convnxt_atto")
    with pytest.raises(ValueError, match="unknown pretrained tag 'bogus'.*convnext_atto.d2_in1k"):
        extract_depthwise("timm:convnext_atto.bogus")
    for shape, what in [((4, 3), "3-D"), ((4, 1, 3, 3), "3-D"), ((4, 3, 5), "3x5"), ((4, 4, 4), "4x4"),
                        ((4, 1, 1), "1x1"), ((0, 3, 3), "empty")]:
        np.save(tmp_path / "bad.npy", np.zeros(shape, np.float32))
        with pytest.raises(ValueError, match=what):
            extract_depthwise(tmp_path / "bad.npy")
        with pytest.raises(ValueError, match=what):
            KernelSet.from_array(np.zeros(shape))
    np.save(tmp_path / "ok.npy", np.ones((10, 3, 3), np.float32))
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:200])
    for name in ["trunc.npy", "junk.npy", "junk.npz", "junk.pt", "junk.safetensors"]:
        if name.startswith("junk"):
            (tmp_path / name).write_bytes(b"\x00garbage\xff" * 50)
        with pytest.raises(ValueError, match=name):
            extract_depthwise(tmp_path / name)
    (tmp_path / "ok.layers.json").write_text(json.dumps([{"layer": "a", "start": 0, "stop": 4}]))
    with pytest.raises(ValueError, match="ok.layers.json"):
        extract_depthwise(tmp_path / "ok.npy")
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1))
    with pytest.raises(ValueError, match="no depthwise kernels"):
        extract_depthwise(plain)
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain.pt has no depthwise"):
        extract_depthwise(tmp_path / "plain.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="no state dict"):
        extract_depthwise(tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="checkpoint= needs"):
        extract_depthwise(tmp_path / "ok.npy", checkpoint=tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        extract_depthwise("timm:convnext_atto", checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="empty"):
        extract_depthwise([])
    with pytest.raises(TypeError, match="int"):
        extract_depthwise(3)
    with pytest.raises(FileNotFoundError, match="no files match"):
        load_kernel_files(str(tmp_path / "none_*.npy"))


def test_checks_run_before_loading(tmp_path, atto):
    # the bad second source is reported even though the first would load fine
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        extract_depthwise([atto, tmp_path / "missing.npz"])


def test_shared_effnet_lite0_k5(shared_kernel):
    ks = extract_depthwise(shared_kernel("effnet-lite0_k5.npy"))
    assert ks.sizes == [5] and ks[5].kernels.shape == (6336, 5, 5) and ks[5].layer_names == ["effnet-lite0_k5"]


def test_shared_layers_json(shared_kernel):
    path = shared_kernel("mcunet-vww_k7.npy")
    meta = json.loads(path.with_suffix(".layers.json").read_text())
    g = extract_depthwise(path)[7]
    assert g.layer_names == [m["layer"] for m in meta]
    assert g.layer_counts() == {m["layer"]: m["stop"] - m["start"] for m in meta}
    np.testing.assert_array_equal(g.kernels, np.load(path))
    both = load_kernel_files([path, shared_kernel("mcunet-vww_k5.npy")])
    assert both.sizes == [5, 7] and len(both) == len(g) + len(np.load(shared_kernel("mcunet-vww_k5.npy")))
    assert both[7].layer_names == g.layer_names

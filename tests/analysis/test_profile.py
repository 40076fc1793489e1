"""Per-layer family profiles: measured on one model, initialising another (dog_init.profile, analysis profile)."""
import json

import pytest
import timm
import torch

import dog_init
from analysis.classify.profile import measure_profile
from dog_init import LayerProfile, Profile, dog_init_, load_profile, save_profile
from dog_init.mixes import allocate
from tests.helpers.runs import TINY, run_train


@pytest.fixture(scope="module")
def convnext_profile(tmp_path_factory):
    """Measured on a ConvNeXt whose early half is on/off centres and late half first derivatives."""
    model = timm.create_model("convnext_atto")
    dog_init_(model, "on_off", include=r"stages\.[01]\.", seed=0)
    dog_init_(model, {"first_derivative": 1}, include=r"stages\.[23]\.", seed=1)
    path = tmp_path_factory.mktemp("profile") / "convnext.json"
    save_profile(measure_profile(model), path)
    return path


def test_profile_records_each_layer(convnext_profile):
    profile = load_profile(convnext_profile)
    assert len(profile.layers) == 12 and profile.layers[0].depth == 0 and profile.layers[-1].depth == 1
    assert profile.layers[0].mix.keys() <= {"on_centre", "off_centre"} and profile.layers[0].clustered > 0.9
    assert max(profile.layers[-1].mix, key=profile.layers[-1].mix.get) == "first_derivative"


@pytest.mark.parametrize("target", ["efficientnet_b0", "mobilenetv3_small_050"])
def test_profile_of_one_model_initialises_another(convnext_profile, target):
    profile = load_profile(convnext_profile)
    model = timm.create_model(target)
    report = dog_init_(model, profile, seed=3)
    n = len(report.layers)
    assert report.profile == profile.source and n > 1
    for i, layer in enumerate(report.layers):
        expected = allocate(len(layer.families), profile.mix_for(i, n, layer.kernel_size))
        assert layer.counts() == {f: c for f, c in expected.items() if c}
    first, last = report.layers[0].counts(), report.layers[-1].counts()
    assert set(first) <= {"on_centre", "off_centre"} and set(last) == {"first_derivative"}


def test_matching_uses_relative_depth_then_nearest_size():
    layers = (LayerProfile("a", 3, 0.0, 9, 1.0, {"on_centre": 1.0}), LayerProfile("b", 7, 0.5, 9, 1.0, {"off_centre": 1.0}),
              LayerProfile("c", 7, 1.0, 9, 0.0, {}), LayerProfile("d", 5, 1.0, 9, 1.0, {"first_derivative": 1.0}))
    p = Profile("test", layers, {"on_centre": 1.0})
    assert p.mix_for(0, 10, 3) == {"on_centre": 1.0}
    assert p.mix_for(9, 10, 7) == {"off_centre": 1.0}          # layer c has no clustered kernels
    assert p.mix_for(9, 10, 5) == {"first_derivative": 1.0}
    assert p.mix_for(0, 10, 9) == {"off_centre": 1.0}          # no 9x9 layer: the nearest size, 7


def test_bad_profile_files_are_named(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="is not a dog-init-profile file"):
        load_profile(path)
    path.write_text(json.dumps({"format": "dog-init-profile", "version": 1, "overall": {},
                                "layers": [{"name": "x", "kernel_size": 4, "depth": 0, "kernels": 1,
                                            "clustered": 1, "mix": {"on_centre": 1}}]}))
    with pytest.raises(ValueError, match="kernel_size 4"):
        load_profile(path)
    with pytest.raises(FileNotFoundError, match="analysis profile"):
        load_profile(tmp_path / "missing.json")


@pytest.mark.slow
def test_cli_profile_and_training_with_it(tmp_path):
    model = timm.create_model("convnext_atto")
    dog_init_(model, {"on_centre": 1, "second_derivative": 1}, seed=0)
    weights = tmp_path / "convnext.pth"
    torch.save(model.state_dict(), weights)
    profile = tmp_path / "profile.json"
    done = run_train("profile", "--model", "timm:convnext_atto", "--checkpoint", weights, "--out", profile,
                     module="analysis")
    assert "stages.0.blocks.0.conv_dw" in done.stdout and profile.is_file()
    again = run_train("profile", "--model", "timm:convnext_atto", "--checkpoint", weights, "--out", profile,
                      module="analysis", check=False)
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--init.profile", profile, "--epochs", "1")
    overall = dog_init.load_profile(profile).overall   # the classifier names a few kernels otherwise
    assert overall["on_centre"] + overall["second_derivative"] > 0.9
    report = json.loads((out / "init_report.json").read_text())
    drawn = [f for layer in report["layers"] for f in layer["families"]]
    assert report["profile"] and sum(f in ("on_centre", "second_derivative") for f in drawn) / len(drawn) > 0.8

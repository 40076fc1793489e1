"""The trainer's cluster census: at epochs and chosen steps, of DoGConv2d layers (checked against their families)
and with the DoG fit; ``python -m train.census`` re-censuses a run from its checkpoints, whatever wrapper wrote
their keys."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers.runs import TINY, census, run_train, weights


def _epoch_shares(run) -> list[tuple[int, float, dict]]:
    return [(c["epoch"], c["clustered"], c["families"]) for c in census(run) if c["kind"] == "epoch"]


def test_recensus_reads_checkpoints_with_wrapper_prefixes(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    for folder in (out / "checkpoints").iterdir():   # as DDP (module.) and torch.compile (_orig_mod.) name keys
        path = folder / "model.safetensors"
        save_file({f"_orig_mod.module.{k}": v for k, v in load_file(str(path)).items()}, str(path))
    run_train(out, module="train.census")
    assert _epoch_shares(out) == _epoch_shares(tiny_run)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ATEN_CPU_CAPABILITY") == "default",
                    reason="torch inductor's CPU code does not build under ATEN_CPU_CAPABILITY=default (at::vec missing)")
def test_compiled_run_saves_plain_keys_and_recensuses(tmp_path):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--train.compile", "true", "--epochs", "1")
    assert not [k for k in weights(out) if k.startswith(("_orig_mod.", "module."))]
    before = _epoch_shares(out)
    run_train(out, module="train.census")
    assert [e for e, *_ in _epoch_shares(out)] == [0, 1]
    assert _epoch_shares(out) == before


# --- at epochs and steps, DoGConv2d layers, the DoG fit -----------------------------------------------------------
def test_step_censuses_and_dogconv_parameterisation(tmp_path):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--init.parameterise", "dog", "--init.residual", "true",
              "--tracking.at_steps", "[3, 7]", "--epochs", "1")
    assert [(c["kind"], c["step"]) for c in census(out)] == [("epoch", 0), ("step", 3), ("step", 7), ("epoch", 10)]
    import timm

    import analysis.kernels.timm_models  # noqa: F401  (registers convmixer_128_6)
    model = timm.create_model("convmixer_128_6", dim=32, depth=2, kernel_size=7, patch_size=2, num_classes=10)
    model.load_state_dict(weights(out))                           # baked: loads into the plain model
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = EventAccumulator(str(out / "tensorboard")).Reload().Tags()["scalars"]
    assert {"dogconv/residual_norm", "dogconv/family_agreement"} <= set(tags)
    assert census(out)[0]["dogconv_agreement"] >= 0.9   # at the start the residual is zero: the families' kernels


def test_census_checks_dogconv_channels_against_their_families():
    import timm

    import analysis.kernels.timm_models  # noqa: F401  (registers convmixer_128_6)
    from dog_init import convert_
    from train.tracking import Census
    model = timm.create_model("convmixer_128_6", dim=64, depth=2, kernel_size=7, patch_size=2, num_classes=10)
    convert_(model, "paper", residual=True, seed=0)
    census_ = Census(log=lambda *_: None)
    assert census_.measure(model).record["dogconv_agreement"] >= 0.97
    plain = timm.create_model("convmixer_128_6", dim=64, depth=2, kernel_size=7, patch_size=2, num_classes=10)
    assert "dogconv_agreement" not in census_.measure(plain).record
    with torch.no_grad():   # residuals far larger than the DoG kernels: the channels are no longer their families
        for name, param in model.named_parameters():
            if name.endswith("residual"):
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
    assert census_.measure(model).record["dogconv_agreement"] < 0.3


@pytest.mark.slow
def test_census_with_the_dog_fit(tmp_path):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--tracking.fit", "true", "--epochs", "1")
    fit = census(out)[0]["fit"]["7"]
    assert fit["on_centre"]["count"] == 30 and 0.5 < fit["on_centre"]["sigma_median"] < 1.5
    assert fit["on_cross"]["sigma_median"] is None               # crosses have no sigma
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = EventAccumulator(str(out / "tensorboard")).Reload().Tags()["scalars"]
    assert {"fit/k7/on_centre/sigma_median", "fit/k7/on_centre/residual_median"} <= set(tags)


def test_a_9x9_convmixer_writes_9x9_census_layers(tmp_path):
    """Issue 16: kernel size 9 is classified by the bundled 9x9 classifier in the trainer's census."""
    from tests.helpers.runs import TINY, census, run_train
    out = tmp_path / "k9"
    run_train("--config", TINY, "--output-dir", out, "--epochs", "1",
              "--model.kwargs", "{dim: 32, depth: 2, kernel_size: 9, patch_size: 2}")
    lines = census(out)
    assert [line["epoch"] for line in lines] == [0, 1]
    for line in lines:
        assert {layer["kernel_size"] for layer in line["layers"]} == {9} and "skipped_sizes" not in line
        assert set(line["sizes"]) == {"9"} and line["kernels"] == 64
    assert lines[0]["clustered"] >= 0.9   # DoG init, named by the 9x9 classifier

"""The published depthwise initialisers and frozen depthwise kernels under the trainer (``init.name``,
``init.source``, ``init.kwargs``, ``train.freeze_depthwise``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.runs import TINY, census, metrics, run_train, weights

DEPTHWISE = ("blocks.0.0.fn.0.weight", "blocks.1.0.fn.0.weight")   # the tiny ConvMixer's two 7x7 depthwise convs


def _initial(out: Path) -> dict[str, torch.Tensor]:
    """The depthwise kernels the run started from: construction and initialisation are seeded."""
    from train.config import load_recipe
    from train.models import build_model
    model, _ = build_model(load_recipe(out / "config.yaml"), 10)
    return {k: v for k, v in model.state_dict().items() if k in DEPTHWISE}


def test_frozen_depthwise_kernels_stay_exactly_and_the_rest_learns(tmp_path):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--train.freeze_depthwise", "true", "--train.ema", "true",
              "--train.ema_decay", "0.9", "--epochs", "3", "--optim.weight_decay", "0.5")
    start = _initial(out)
    saved = [weights(out), weights(out, "model_ema.safetensors")]
    saved += [load_file(str(p / "model.safetensors")) for p in sorted((out / "checkpoints").iterdir())]
    for state in saved:
        for key in DEPTHWISE:
            assert torch.equal(state[key], start[key]), key
    first = load_file(str(sorted((out / "checkpoints").iterdir())[0] / "model.safetensors"))
    assert not torch.equal(first["head.weight"], weights(out)["head.weight"])   # everything else trains
    shares = [(c["clustered"], c["families"]) for c in census(out)]
    assert all(s == shares[0] for s in shares)   # the census of a frozen run stays constant


@pytest.mark.parametrize("name, extra", [("impulse", ()), ("box", ("--init.kwargs", "{taps: 3}")),
                                         ("gaussian", ("--init.kwargs", "{sigma: 1.5}")), ("covariance", ())])
def test_every_initialiser_trains(tmp_path, name, extra):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--init.name", name, *extra, "--epochs", "1",
              "--tracking.census", "false")
    kernels = weights(out)[DEPTHWISE[0]]
    assert torch.isfinite(kernels).all() and [m["epoch"] for m in metrics(out)] == [1]


@pytest.mark.slow
def test_bank_and_covariance_take_a_source_file_or_a_run_s_weights(tiny_run, tmp_path):
    bank = tmp_path / "bank.npy"
    filters = np.random.default_rng(0).normal(size=(4, 7, 7)).astype(np.float32)
    np.save(bank, filters)
    out = tmp_path / "bank"
    run_train("--config", TINY, "--output-dir", out, "--init.name", "bank", "--init.source", bank, "--epochs", "1",
              "--optim.lr", "1e-9", "--tracking.census", "false")
    got = _initial(out)[DEPTHWISE[0]].squeeze(1).numpy()
    unit = filters / np.linalg.norm(filters.reshape(4, -1), axis=1)[:, None, None]
    moves = [np.rot90(f, r) for f in unit for r in range(4)]
    moves = [m * s for m in moves + [np.fliplr(m) for m in moves] for s in (1, -1)]
    for kernel in got:   # every kernel a bank filter up to scale and a symmetry of the square and sign
        kernel = kernel / np.linalg.norm(kernel)
        assert min(np.abs(kernel - m).max() for m in moves) < 1e-5
    out = tmp_path / "cov"   # kernels of a trained model's weights file, extracted by analysis
    run_train("--config", TINY, "--output-dir", out, "--init.name", "covariance", "--init.source",
              tiny_run / "model.safetensors", "--epochs", "1", "--tracking.census", "false")


def test_master_key_filter_bank(tmp_path, shared_kernel):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--init.name", "bank", "--init.source",
              shared_kernel("master-key-filters_k7.npy"), "--epochs", "1", "--tracking.census", "false")

"""Global batch and learning rate as timm states them, SyncBatchNorm and the EMA warm-up."""
from __future__ import annotations

import pytest
import torch

from train.config import apply_overrides, load_recipe
from train.optim import global_batch, peak_lr
from tests.helpers.runs import TINY, run_train, weights


@pytest.mark.parametrize("pairs, processes, batch, lr", [
    ([], 1, 16, 0.003),                                                                 # optim.lr as given
    ([("optim.lr_base", "0.004"), ("optim.lr_base_size", "32")], 1, 16, 0.002),         # linear
    ([("optim.lr_base", "0.004"), ("optim.lr_base_size", "32")], 8, 128, 0.016),
    ([("optim.lr_base", "0.004"), ("optim.lr_base_size", "32"), ("optim.lr_base_scale", "sqrt"),
      ("optim.accumulation", "2")], 4, 128, 0.008),                                       # sqrt(128 / 32) = 2
])
def test_peak_lr_follows_the_global_batch(pairs, processes, batch, lr):
    cfg = apply_overrides(load_recipe(TINY), pairs)
    assert global_batch(cfg, processes) == batch
    assert peak_lr(cfg, processes) == pytest.approx(lr)


def test_the_global_batch_is_said_and_a_recipe_tuned_for_another_warns(tmp_path):
    done = run_train("--config", TINY, "--output-dir", tmp_path / "r", "--epochs", "1", "--optim.lr_base", "0.004",
                     "--optim.lr_base_size", "32", "--optim.tuned_batch", "640", "--tracking.census", "false")
    assert "global batch 16 = 16 per process x 1 process(es) x 1 accumulation; peak lr 0.002" in done.stdout
    assert "tuned for a global batch of 640, this run's is 16" in done.stderr


@pytest.mark.slow
def test_ema_warmup_follows_the_model_early(tmp_path):
    """ModelEmaV3's warm-up: the decay starts near 0, so after 20 updates the EMA is near the model, while a plain
    decay of 0.9998 has barely left the initial weights."""
    runs = {}
    for warm in ("true", "false"):
        out = tmp_path / warm
        run_train("--config", TINY, "--output-dir", out, "--train.ema", "true", "--train.ema_warmup", warm,
                  "--tracking.census", "false")
        runs[warm] = weights(out), weights(out, "model_ema.safetensors")
    key = "head.weight"
    gap = {warm: (ema[key] - model[key]).norm().item() for warm, (model, ema) in runs.items()}
    assert gap["true"] < 0.5 * gap["false"]


def test_sync_batchnorm_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: model.sync_bn is allowed")
    done = run_train("--config", TINY, "--output-dir", tmp_path / "r", "--model.sync_bn", "true", check=False)
    assert done.returncode == 2 and "model.sync_bn needs CUDA" in done.stderr and not (tmp_path / "r").exists()

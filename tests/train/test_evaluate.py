"""``python -m train.evaluate``: a checkpoint scored without training gives the run's own top-1."""
from __future__ import annotations

import json
import sys

import pytest

from tests.helpers.runs import TINY, metrics, run_train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m"]


def _evaluate(*args, launcher=None) -> dict:
    out = args[0] / "eval.json" if not launcher else args[0].parent / f"eval-{args[0].name}.json"
    run_train(*args, "--out", out, module="train.evaluate", launcher=launcher)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_final_weights_and_an_epoch_checkpoint_score_as_in_training(tiny_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    logged = metrics(run)
    final = _evaluate(run)
    assert (final["top1"], final["top5"], final["eval_images"]) == (logged[-1]["top1"], logged[-1]["top5"], 40)
    assert final["eval_loss"] == pytest.approx(logged[-1]["eval_loss"], rel=1e-6)
    assert final["census"]["kernels"] == 64 and 0 <= final["census"]["clustered"] <= 1
    first = _evaluate(run, "--checkpoint", run / "checkpoints" / "epoch_1")
    assert first["top1"] == logged[0]["top1"]
    assert _evaluate(run, "--tta", "flip")["eval_images"] == 40


@pytest.mark.slow
def test_two_processes_count_every_image_once(tiny_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    result = _evaluate(run, "--data.eval_batch_size", "7", launcher=TORCHRUN)   # 40 = 2 x 3 x 7 - 2: padding
    assert (result["top1"], result["eval_images"]) == (metrics(run)[-1]["top1"], 40)


@pytest.mark.slow
def test_a_two_process_run_is_evaluated_from_its_checkpoint(tmp_path):
    run = tmp_path / "two"
    run_train("--config", TINY, "--output-dir", run, "--seed", "0", "--data.synthetic_train", "192",
              "--train.ema", "true", launcher=TORCHRUN)
    logged = metrics(run)
    assert _evaluate(run, "--checkpoint", run / "checkpoints" / "epoch_2")["top1"] == logged[-1]["top1"]
    ema = _evaluate(run, "--checkpoint", run / "checkpoints" / "epoch_2", "--ema")
    assert ema["top1"] == logged[-1]["ema_top1"] and ema["ema"] is True


@pytest.mark.parametrize("args, named", [
    (("--checkpoint", "nope.safetensors"), "--checkpoint 'nope.safetensors' does not exist"),
    (("--data.img_sizee", "32"), "unknown key 'data.img_sizee'"),
    (("--tta", "crop"), "invalid choice: 'crop'"),
])
def test_bad_arguments_exit_2_naming_them(tiny_run, args, named):
    done = run_train(tiny_run, *args, module="train.evaluate", check=False)
    assert done.returncode == 2 and named in done.stderr, done.stderr[-800:]

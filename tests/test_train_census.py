"""``python -m train.census`` re-censuses a run from its checkpoints, whatever wrapper wrote their keys."""
from __future__ import annotations

import os
import shutil

import pytest
from safetensors.torch import load_file, save_file

from train_helpers import TINY, census, run_train, weights


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

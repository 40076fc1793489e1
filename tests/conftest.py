"""Shared test set-up."""
import torch

# pytest -n 2 runs two workers on a 2-core machine: one torch thread each avoids OpenMP oversubscription, which
# slows elementwise kernels many-fold (a busy core stalls the other thread at every parallel region).
torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished 2-epoch run of tests/data/tiny.yaml (seed 0), shared by the tests that only read it."""
    from train_helpers import TINY, run_train
    out = tmp_path_factory.mktemp("tiny") / "run"
    run_train("--config", TINY, "--output-dir", out, "--seed", "0", "--tracking.figures", "true")
    return out

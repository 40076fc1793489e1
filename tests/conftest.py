"""Shared test set-up: thread count, and the fixtures more than one folder uses.

==========================  ===========================================================================================
fixture (session-scoped)    what
==========================  ===========================================================================================
``tiny_run``                one finished 2-epoch run of tests/data/tiny.yaml (seed 0), for tests that only read it
``pretrained_classifier``   ``pretrained_classifier(k)``: the bundled k x k ``KernelClassifier``, loaded once per size
                            (shared: a test that changes one must change a ``copy.deepcopy`` of it)
``shared_data``             the shared data folder (``$DOG_INIT_SHARED_DATA``, default ../shared/data beside the
                            checkout); a test that asks for it skips, saying where it looked, when it is absent
``shared_kernel``           ``shared_kernel(name)``: the path of shared_data/kernels/NAME; skips naming the file when
                            it is absent
``cifar_zip``               shared_data/cifar10-jpeg.zip; skips naming it when absent
==========================  ===========================================================================================

Genuinely slow tests (multi-process launches, compiled runs, full report or training runs of 10 s or more on two
busy cores) carry ``@pytest.mark.slow``: ``-m "not slow"`` leaves them out, the default run (``make test``) runs all.
"""
import functools
from pathlib import Path

import torch

# pytest -n 2 runs two workers on a 2-core machine: one torch thread each avoids OpenMP oversubscription, which
# slows elementwise kernels many-fold (a busy core stalls the other thread at every parallel region).
torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished 2-epoch run of tests/data/tiny.yaml (seed 0), shared by the tests that only read it."""
    from tests.helpers.runs import TINY, run_train
    out = tmp_path_factory.mktemp("tiny") / "run"
    run_train("--config", TINY, "--output-dir", out, "--seed", "0", "--tracking.figures", "true")
    return out


@pytest.fixture(scope="session")
def pretrained_classifier():
    """``pretrained_classifier(k)``: ``KernelClassifier.pretrained(k)``, loaded once per size for the session."""
    from analysis import KernelClassifier
    return functools.lru_cache(maxsize=None)(KernelClassifier.pretrained)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    from analysis.classify.bundle import shared_kernels_dir   # the one definition: $DOG_INIT_SHARED_DATA/kernels
    path = shared_kernels_dir().parent
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set DOG_INIT_SHARED_DATA to the folder)")
    return path


@pytest.fixture(scope="session")
def shared_kernel(shared_data):
    """``shared_kernel(name)``: shared_data/kernels/NAME, or a skip naming the missing file."""
    def path(name: str) -> Path:
        found = shared_data / "kernels" / name
        if not found.is_file():
            pytest.skip(f"shared kernel file {found} not found")
        return found
    return path


@pytest.fixture(scope="session")
def cifar_zip(shared_data) -> Path:
    path = shared_data / "cifar10-jpeg.zip"
    if not path.is_file():
        pytest.skip(f"CIFAR-10 zip not found at {path}")
    return path

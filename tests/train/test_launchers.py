"""Launchers: two processes under torchrun train what one process with the same samples per step trains, and
``accelerate launch`` writes each census once."""
import sys

import pytest
import torch

from tests.helpers.runs import TINY, census, metrics, run_train, weights

LN_MODEL = ["--model.name", "convnext_atto", "--model.kwargs", "{depths: [1, 1, 1, 1], dims: [8, 16, 24, 32]}",
            "--data.img_size", "32", "--augment.enabled", "false"]   # no batch statistics, no random augmentation


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--config", TINY, "--seed", "0", "--data.synthetic_train", "192", *LN_MODEL]
    run_train(*common, "--output-dir", one, "--optim.accumulation", "2")   # same samples per optimiser step
    run_train(*common, "--output-dir", two, launcher=[sys.executable, "-m", "torch.distributed.run",
                                                      "--nproc_per_node", "2", "-m"])
    wa, wb = weights(one), weights(two)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    for a, b in zip(metrics(one), metrics(two), strict=True):
        assert a["eval_images"] == b["eval_images"] == 40       # every validation image once across processes
        for key in ("train_loss", "top1", "top5", "eval_loss"):
            assert a[key] == pytest.approx(b[key], abs=1e-4)
    for a, b in zip(census(one), census(two), strict=True):
        assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
        assert a["families"] == pytest.approx(b["families"], abs=1e-9)


@pytest.mark.slow
def test_accelerate_launch_gives_each_census_once(tmp_path):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, launcher=[sys.executable, "-m", "accelerate.commands.launch",
                                                               "--num_processes", "1", "-m"])
    assert [c["epoch"] for c in census(out)] == [0, 1, 2]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_localhost_give_each_census_once(tmp_path):
    """torchrun --nnodes 2 --nproc_per_node 1 on one machine (two "nodes", gloo, c10d rendezvous on 127.0.0.1):
    the same census and metrics as one process with the same samples per update."""
    import subprocess
    from tests.helpers import ROOT
    from tests.helpers.runs import ENV
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--config", str(TINY), "--seed", "0", "--data.synthetic_train", "192", *LN_MODEL]
    run_train(*common, "--output-dir", one, "--optim.accumulation", "2")
    port = _free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(rank), "--rdzv_backend", "c10d", "--rdzv_id", "dog-init-test",
                               "--rdzv_endpoint", f"127.0.0.1:{port}", "-m", "train", *common, "--output-dir", str(two)],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    assert [c["epoch"] for c in census(two)] == [0, 1, 2]
    for a, b in zip(census(one), census(two), strict=True):
        assert a["families"] == pytest.approx(b["families"], abs=1e-9)
    for a, b in zip(metrics(one), metrics(two), strict=True):
        assert a["top1"] == pytest.approx(b["top1"], abs=1e-4) and b["eval_images"] == 40

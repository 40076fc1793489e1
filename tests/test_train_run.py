"""End-to-end training runs: outputs, exact resume after SIGKILL, corrupt checkpoints, launchers, Ctrl-C."""
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from train_helpers import ENV, ROOT, TINY, census, metrics, run_train, weights

LN_MODEL = ["--model.name", "convnext_atto", "--model.kwargs", "{depths: [1, 1, 1, 1], dims: [8, 16, 24, 32]}",
            "--data.img_size", "32", "--augment.enabled", "false"]   # no batch statistics, no random augmentation


def _same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    assert metrics(a) == metrics(b)
    assert census(a) == census(b)


def test_run_writes_census_metrics_weights_and_tensorboard(tiny_run):
    lines = census(tiny_run)
    assert [(c["kind"], c["epoch"]) for c in lines] == [("epoch", 0), ("epoch", 1), ("epoch", 2)]
    first = lines[0]
    assert first["step"] == 0 and first["kernels"] == 64 and first["clustered"] == pytest.approx(1.0)
    assert abs(sum(first["families"].values()) - first["clustered"]) < 1e-9
    assert [layer["name"] for layer in first["layers"]] == ["blocks.0.0.fn.0", "blocks.1.0.fn.0"]
    rows = metrics(tiny_run)
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["eval_images"] == 40 for r in rows)
    import timm

    import analysis.kernels.timm_models  # noqa: F401  (registers convmixer_128_6)
    model = timm.create_model("convmixer_128_6", dim=32, depth=2, kernel_size=7, patch_size=2, num_classes=10)
    model.load_state_dict(weights(tiny_run))                       # strict: the plain timm model
    assert (tiny_run / "config.yaml").is_file() and (tiny_run / "init_report.json").is_file()
    assert sorted(p.name for p in (tiny_run / "checkpoints").iterdir()) == ["epoch_1", "epoch_2"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tiny_run / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    assert {"clusters/clustered", "clusters/on_centre", "clusters/layer_1/clustered", "eval/top1",
            "train/loss", "train/lr", "train/images_per_s"} <= set(scalars)
    assert [e.step for e in events.Scalars("clusters/clustered")] == [0, 10, 20]
    assert {"clusters/layers", "clusters/samples_k7/on_centre"} <= set(events.Tags()["images"])
    assert "depthwise/layer_0" in events.Tags()["histograms"]


def _kill_when(out, ready, *extra):
    proc = subprocess.Popen([sys.executable, "-m", "train", "--config", str(TINY), "--output-dir", str(out),
                             "--seed", "0", *extra], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("when", ["first census line", "first checkpoint"])
def test_sigkill_and_resume_equals_an_uninterrupted_run(tiny_run, tmp_path, when):
    out = tmp_path / "run"
    if when == "first census line":
        ready = lambda: (out / "census.jsonl").is_file()  # noqa: E731
    else:
        ready = lambda: (out / "checkpoints" / "epoch_1" / "complete.json").is_file()  # noqa: E731
    _kill_when(out, ready, "--tracking.figures", "true")
    run_train("--config", TINY, "--output-dir", out, "--seed", "0", "--tracking.figures", "true", "--resume", "auto")
    _same_run(tiny_run, out)
    assert not list((out / "checkpoints").glob(".*partial*"))


def test_corrupt_checkpoint_is_skipped_with_a_warning(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    bad = out / "checkpoints" / "epoch_2" / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    done = run_train("--config", TINY, "--output-dir", out, "--seed", "0", "--tracking.figures", "true",
                     "--resume", "auto")
    assert "epoch_2" in done.stderr and "truncated" in done.stderr and "skipping it" in done.stderr
    assert "resumed from" in done.stdout and "epoch_1" in done.stdout
    _same_run(tiny_run, out)   # epoch 2 is recomputed exactly


def test_resume_of_a_missing_checkpoint_path_is_refused(tmp_path):
    done = run_train("--config", TINY, "--output-dir", tmp_path / "r", "--resume", tmp_path / "nope", check=False)
    assert done.returncode == 2 and "is not a checkpoint folder" in done.stderr


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


def test_accelerate_launch_gives_each_census_once(tmp_path):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, launcher=[sys.executable, "-m", "accelerate.commands.launch",
                                                               "--num_processes", "1", "-m"])
    assert [c["epoch"] for c in census(out)] == [0, 1, 2]


def test_ctrl_c_leaves_no_partial_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "train", "--config", str(TINY), "--output-dir", str(out),
                             "--epochs", "4"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while not (out / "checkpoints").is_dir() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "resume auto" in err
    assert not list((out / "checkpoints").glob(".*")), "a partial checkpoint was left"
    for folder in (out / "checkpoints").iterdir():
        assert (folder / "complete.json").is_file()


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


def test_weights_feed_the_analysis_report(tiny_run, tmp_path):
    done = run_train("report", "--model", "timm:convmixer_128_6", "--checkpoint", tiny_run / "model.safetensors",
                     "--out", tmp_path / "report", "--quiet", module="analysis")
    assert "convmixer_128_6" in done.stdout
    import json
    [row] = json.loads((tmp_path / "report" / "summary.json").read_text())["rows"]
    last = census(tiny_run)[-1]   # the trained weights, classified by the same bundled classifier
    assert (row["size"], row["n_kernels"], row["n_layers"]) == (7, last["kernels"], 2)
    assert row["clustered_share"] == pytest.approx(last["clustered"])


def test_timeline_draws_groups_of_runs(tiny_run, tmp_path):
    out = tmp_path / "timeline.png"
    run_train(f"dog={tiny_run},{tiny_run}", str(tiny_run), "--out", out, module="train.timeline")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_train(str(tmp_path), "--out", out, module="train.timeline", check=False)
    assert bad.returncode == 2 and "has no census.jsonl" in bad.stderr


def test_census_with_the_dog_fit(tmp_path):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--tracking.fit", "true", "--epochs", "1")
    fit = census(out)[0]["fit"]["7"]
    assert fit["on_centre"]["count"] == 30 and 0.5 < fit["on_centre"]["sigma_median"] < 1.5
    assert fit["on_cross"]["sigma_median"] is None               # crosses have no sigma
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = EventAccumulator(str(out / "tensorboard")).Reload().Tags()["scalars"]
    assert {"fit/k7/on_centre/sigma_median", "fit/k7/on_centre/residual_median"} <= set(tags)


def test_start_from_a_checkpoint(tiny_run, tmp_path):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--init.name", "default", "--epochs", "1",
              "--model.checkpoint", tiny_run / "model.safetensors")
    assert census(out)[0]["families"] == census(tiny_run)[-1]["families"]   # epoch 0 = the loaded weights
    bad = run_train("--config", TINY, "--output-dir", tmp_path / "bad", "--model.name", "convnext_atto",
                    "--model.kwargs", "{}", "--model.checkpoint", tiny_run / "model.safetensors", check=False)
    assert bad.returncode == 2 and "does not fit" in bad.stderr and not (tmp_path / "bad").exists()

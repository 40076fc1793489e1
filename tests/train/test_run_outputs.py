"""What a training run leaves: census, metrics, weights, checkpoints and TensorBoard events; weights that feed the
analysis report and a later run (model.checkpoint); python -m train.timeline over groups of runs. Resume and
interruptions: test_resume.py; launchers: test_launchers.py; the census itself: test_census.py."""
import json

import pytest

from tests.helpers.runs import TINY, census, metrics, run_train, weights


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


@pytest.mark.slow
def test_weights_feed_the_analysis_report(tiny_run, tmp_path):
    done = run_train("report", "--model", "timm:convmixer_128_6", "--checkpoint", tiny_run / "model.safetensors",
                     "--out", tmp_path / "report", "--quiet", module="analysis")
    assert "convmixer_128_6" in done.stdout
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


@pytest.mark.slow
def test_start_from_a_checkpoint(tiny_run, tmp_path):
    out = tmp_path / "run"
    run_train("--config", TINY, "--output-dir", out, "--init.name", "default", "--epochs", "1",
              "--model.checkpoint", tiny_run / "model.safetensors")
    assert census(out)[0]["families"] == census(tiny_run)[-1]["families"]   # epoch 0 = the loaded weights
    bad = run_train("--config", TINY, "--output-dir", tmp_path / "bad", "--model.name", "convnext_atto",
                    "--model.kwargs", "{}", "--model.checkpoint", tiny_run / "model.safetensors", check=False)
    assert bad.returncode == 2 and "does not fit" in bad.stderr and not (tmp_path / "bad").exists()

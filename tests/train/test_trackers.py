"""``train.trackers`` (issue 18 §4): W&B (offline) and MLflow (local file store) get the census scalars and the
figures through Accelerate; unknown names and missing packages are refused before any work."""
import importlib.util
import json
import struct

import pytest

from tests.helpers.runs import ENV, TINY, census, run_train

needs = {name: pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"{name} is not installed")
         for name in ("wandb", "mlflow")}


def _run(tmp_path, trackers: str, **env):
    out = tmp_path / "run"
    done = run_train("--config", TINY, "--output-dir", out, "--train.epochs", "1", "--tracking.figures", "true",
                     "--train.trackers", trackers, check=False, env={**ENV, **env})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return out


@needs["mlflow"]
def test_mlflow_file_store_gets_the_census_and_the_config(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # reading the run's file store back
    out = _run(tmp_path, "[tensorboard, mlflow]")
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "dog-init"]
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "clusters/clustered")
    want = {line["step"]: line["clustered"] for line in census(out)}
    assert {m.step: m.value for m in history} == pytest.approx(want)
    assert run.data.params["init.name"] == "dog" and "eval/top1" in run.data.metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "clusters/layers")]
    assert artifacts, "the per-layer census figure is an artifact"
    assert (out / "tensorboard").is_dir()


def wandb_history(path) -> list[dict]:
    """The history rows of an offline W&B run file: LevelDB-log records (32 KiB blocks, 7-byte headers) after a
    7-byte W&B header, each a ``wandb_internal_pb2.Record`` (wandb ships no reader for them)."""
    from wandb.proto import wandb_internal_pb2
    data, block, pos, chunk, rows = path.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7]) if left >= 7 else (0, 0)
        if left < 7 or (length == 0 and kind == 0):   # block trailer / padding
            pos += left
            continue
        chunk, pos = chunk + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):   # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@needs["wandb"]
def test_wandb_offline_run_gets_the_census(tmp_path):
    out = _run(tmp_path, "[wandb]", WANDB_MODE="offline", WANDB_SILENT="true")
    (path,) = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    rows = wandb_history(path)
    logged = {row["_step"]: row["clusters/clustered"] for row in rows if "clusters/clustered" in row}
    assert logged == pytest.approx({line["step"]: line["clustered"] for line in census(out)})
    assert any("eval/top1" in row for row in rows)
    assert list((path.parent / "files" / "media" / "images").rglob("*.png"))     # kernel mosaics
    assert not (out / "tensorboard").exists()                                     # TensorBoard only when listed


def test_unknown_tracker_and_missing_package_are_refused_before_work(tmp_path, monkeypatch):
    done = run_train("--config", TINY, "--output-dir", tmp_path / "a", "--train.trackers", "[tensorbored]",
                     check=False)
    assert done.returncode == 2 and "unknown tracker 'tensorbored'" in done.stderr and "wandb" in done.stderr
    assert not (tmp_path / "a").exists()
    from train.config import ConfigError
    from train.trackers import check_trackers
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="install it with: pip install aim"):
        check_trackers(["tensorboard", "aim"])

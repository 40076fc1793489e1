"""Trackers beyond TensorBoard (``train.trackers``), through Accelerate's ``log_with``.

TensorBoard stays the run's own ``SummaryWriter`` (custom-scalars layout, ``purge_step`` on resume, histograms); every
other tracker named in ``train.trackers`` is an Accelerate tracker, started on the main process with the run's
flattened config as hyper-parameters, and given every scalar TensorBoard gets (``clusters/clustered``, ``eval/top1``,
...) at the same optimiser step, and the census figures and kernel mosaics where it takes images (W&B and Aim:
``log_images``; MLflow: ``log_figure`` artifacts). Where they write:

* ``wandb``: ``RUN/wandb`` (``WANDB_MODE=offline`` keeps it there; ``wandb sync`` uploads it later), project
  ``dog-init``, run name the run folder's;
* ``mlflow``: ``$MLFLOW_TRACKING_URI`` if set, else a file store in ``RUN/mlruns`` (``MLFLOW_ALLOW_FILE_STORE`` is
  set for it: MLflow 3 keeps file stores in maintenance mode), experiment ``dog-init``;
* ``aim``, ``comet_ml``, ``clearml``, ``dvclive``: their own defaults (Accelerate's ``init_trackers``).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .config import ConfigError

__all__ = ["TRACKERS", "PROJECT", "check_trackers", "start_trackers", "log_image"]

# tracker -> (importable package, pip command); tensorboard is always installed (train's own dependency).
TRACKERS = {"tensorboard": (None, None), "wandb": ("wandb", "pip install wandb"),
            "mlflow": ("mlflow", "pip install mlflow"), "aim": ("aim", "pip install aim"),
            "comet_ml": ("comet_ml", "pip install comet-ml"), "clearml": ("clearml", "pip install clearml"),
            "dvclive": ("dvclive", "pip install dvclive")}
PROJECT = "dog-init"


def check_trackers(names) -> list[str]:
    """The Accelerate trackers of ``train.trackers`` (all but tensorboard); ConfigError for an unknown or repeated
    name, or one whose package is missing (naming the pip command), before any work starts."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"train.trackers must be a list of tracker names ({', '.join(TRACKERS)}), got {names!r}")
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"train.trackers: unknown tracker {name!r}; allowed: {', '.join(TRACKERS)}")
        package, pip = TRACKERS[name]
        if package is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(f"train.trackers: {name} needs the {package!r} package, which is not installed; "
                              f"install it with: {pip}")
    if len(set(names)) < len(names):
        raise ConfigError(f"train.trackers names a tracker twice: {list(names)}")
    return [n for n in names if n != "tensorboard"]


def start_trackers(accelerator, out: Path, config: dict) -> None:
    """``accelerator.init_trackers`` for the trackers it was built with (``log_with``), writing under ``out``."""
    if not accelerator.log_with:
        return
    names = {str(getattr(t, "value", t)).lower() for t in accelerator.log_with}
    if "mlflow" in names and "MLFLOW_TRACKING_URI" not in os.environ:
        import mlflow
        # MLflow 3 keeps its file store in maintenance mode behind this switch; a run folder is a file store.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())
    # Lists and dicts as text, as in TensorBoard's hyper-parameters; MLflow and W&B take scalars and text.
    accelerator.init_trackers(PROJECT, config=config, init_kwargs={
        "wandb": {"dir": str(out), "name": out.name},
        "mlflow": {"run_name": out.name}})


def log_image(accelerator, tag: str, image=None, figure=None, step: int = 0) -> None:
    """An HWC uint8 ``image`` (or a matplotlib ``figure``) to every Accelerate tracker that takes one."""
    for tracker in accelerator.trackers:
        if hasattr(tracker, "log_images") and image is not None:
            tracker.log_images({tag: [image]}, step=step)
        elif hasattr(tracker, "log_figure") and figure is not None:
            tracker.log_figure(figure, f"{tag}/step_{step:08d}.png")

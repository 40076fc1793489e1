"""Epoch and step checkpoints through ``accelerator.save_state``, written atomically, verified on resume, pruned.

Layout: ``OUTPUT/checkpoints/epoch_N/`` (after epoch N's evaluation) and ``step_S/`` (mid-epoch, after optimiser
step S: every ``train.checkpoint_every_steps`` steps and on a preemption signal) hold what Accelerate saves (model,
optimiser, RNG states of every process, the registered scheduler / counters / EMA; the counters say how many
batches of the epoch were done) plus ``complete.json``, a manifest of every file's size and CRC32 written last. Only
the newest step checkpoint is kept, and none older than the newest epoch checkpoint. A checkpoint is written into ``.epoch_N.partial-<pid>-XXXXXXXX`` (``dog_init.files.atomic_folder``) and
renamed when complete, with SIGINT / SIGTERM held back meanwhile (Ctrl-C finishes the write, then stops:
``train.signals``), so a visible ``epoch_N`` is always whole. On ``--resume auto``, checkpoints are tried newest
first (by optimiser step; an epoch checkpoint before a step checkpoint of the same step); one whose manifest is missing or does not match its files is skipped with a warning naming it; one that
does not load (another model) stops the run before anything is written.
"""
from __future__ import annotations

import json
import re
import shutil
import warnings
import zlib
from contextlib import nullcontext
from pathlib import Path

from torch import nn

from dog_init.files import PARTIAL, atomic_folder, atomic_path

from .signals import STOP

__all__ = ["CheckpointManager", "CheckpointError", "CheckpointMismatch", "epoch_folders", "step_folders",
           "held_signals", "save_weights", "read_weights_metadata", "MANIFEST"]

MANIFEST = "complete.json"
_NAME = re.compile(r"^epoch_(\d+)$")
_STEP = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names it."""


class CheckpointMismatch(CheckpointError):
    """The run folder's checkpoints cannot be loaded with this configuration (or none can be loaded at all)."""


def held_signals():
    """A block Ctrl-C / SIGTERM must not interrupt (``train.signals.STOP.held``)."""
    return STOP.held()


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def _manifest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): {"size": p.stat().st_size, "crc32": _crc32(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def epoch_folders(out_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, folder) of the run's ``checkpoints/epoch_N`` folders, newest first (writes in progress are
    ``.epoch_N.partial-*`` until their rename; not verified)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def step_folders(out_dir: Path) -> list[tuple[int, Path]]:
    """(optimiser step, folder) of the run's mid-epoch ``checkpoints/step_S`` folders, newest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def _manifest_step(folder: Path) -> int:
    try:
        return int(json.loads((folder / MANIFEST).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1   # tried last; verification names what is wrong with it


class CheckpointManager:
    def __init__(self, out_dir: Path, accelerator, keep_last: int = 2):
        if keep_last < 1:
            raise ValueError(f"train.keep_last must be >= 1, got {keep_last}")
        self.root, self.accelerator, self.keep_last = Path(out_dir) / "checkpoints", accelerator, keep_last

    # ---------------------------------------------------------------------------------------------- reading
    def complete(self) -> list[tuple[int, Path]]:
        """(epoch, folder) of every finished epoch checkpoint write, newest first (not yet verified)."""
        return epoch_folders(self.root.parent)

    def candidates(self) -> list[Path]:
        """Every finished checkpoint write, epoch and step ones, newest (latest optimiser step) first."""
        epochs = [((_manifest_step(p), 1), p) for _, p in self.complete()]
        steps = [((step, 0), p) for step, p in step_folders(self.root.parent)]
        return [p for _, p in sorted(epochs + steps, key=lambda item: item[0], reverse=True)]

    @staticmethod
    def verify(folder: Path) -> dict:
        """The manifest of ``folder``, or CheckpointError saying what is wrong with it."""
        if not folder.is_dir():
            raise CheckpointError(f"{str(folder)!r} is not a checkpoint folder (expected OUTPUT/checkpoints/epoch_N)")
        path = folder / MANIFEST
        if not path.is_file():
            raise CheckpointError(f"checkpoint {str(folder)!r} has no {MANIFEST} (an interrupted write?)")
        try:
            manifest = json.loads(path.read_text())
            files = manifest["files"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"checkpoint {str(folder)!r}: unreadable {MANIFEST} ({err})") from None
        for name, want in files.items():
            p = folder / name
            if not p.is_file():
                raise CheckpointError(f"checkpoint {str(folder)!r}: {name} is missing")
            if p.stat().st_size != want["size"]:
                raise CheckpointError(f"checkpoint {str(folder)!r}: {name} is truncated ({p.stat().st_size} of "
                                      f"{want['size']} bytes)")
            if _crc32(p) != want["crc32"]:
                raise CheckpointError(f"checkpoint {str(folder)!r}: {name} is corrupt (CRC32 mismatch)")
        return manifest

    def load(self, spec: str) -> Path | None:
        """Load the checkpoint ``spec`` names (``auto``: the newest one that verifies; a path: that one) into every
        process (each its own RNG state). Returns its folder, or None when ``auto`` finds no checkpoint at all.

        A checkpoint whose files do not match their manifest is skipped with a warning (an older one is tried).
        One that verifies but does not load (another model, other shapes) raises CheckpointMismatch: an older one
        would not fit either. When every checkpoint fails verification, CheckpointError: a run folder with
        checkpoints is never silently started afresh."""
        if spec != "auto":
            folder = Path(spec)
            self.verify(folder)
            self._load_state(folder)
            return folder
        problems = []
        for folder in self.candidates():
            try:
                self.verify(folder)
            except CheckpointError as err:
                problems.append(str(err))
                if self.accelerator.is_main_process:
                    warnings.warn(f"{err}; skipping it", stacklevel=2)
                continue
            self._load_state(folder)
            return folder
        if problems:
            raise CheckpointMismatch(f"no checkpoint of {str(self.root.parent)!r} can be used ({'; '.join(problems)}); "
                                     "repair or remove them, or choose another --output-dir")
        return None

    def _load_state(self, folder: Path) -> None:
        try:
            self.accelerator.load_state(str(folder))
        except Exception as err:   # torch / safetensors / pickle raise their own types
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            shapes = [line for line in lines if line.startswith("size mismatch")][:3]
            said = " ".join(lines[:2])[:300] + "".join(f"; {line[:200]}" for line in shapes)
            raise CheckpointMismatch(f"checkpoint {str(folder)!r} does not fit this configuration "
                                     f"({type(err).__name__}: {said})") from None

    # ---------------------------------------------------------------------------------------------- writing
    def clean_partial(self) -> None:
        """Remove folders of writes that never completed (main process). Every one is stale, whatever its pid: the
        run folder's lock (``train.run_folder``) admits one writer, and this is it (``.epoch_N.partial`` without a
        pid is an older version's name)."""
        if self.accelerator.is_main_process and self.root.is_dir():
            for p in [*self.root.glob(".epoch_*.partial"), *self.root.glob(f".epoch_*{PARTIAL}*"),
                      *self.root.glob(f".step_*{PARTIAL}*")]:
                shutil.rmtree(p, ignore_errors=True)

    def save(self, epoch: int, step: int, top1: float | None, best_epoch: int, *, batch: int | None = None) -> Path:
        """Write ``epoch_<epoch>`` (or, given the epoch's ``batch`` done so far, ``step_<step>``) atomically from every
        process's state, then prune old ones."""
        from accelerate.utils import broadcast_object_list
        acc = self.accelerator
        final = self.root / (f"epoch_{epoch}" if batch is None else f"step_{step}")
        # replace: the same epoch written again after a crash between write and prune
        writing = atomic_folder(final, replace=True, what="checkpoint") if acc.is_main_process else nullcontext()
        with held_signals():
            with writing as tmp:   # the main process makes the folder, renames it (files fsync'd) when complete
                tmp = Path(broadcast_object_list([None if tmp is None else str(tmp)])[0])   # every process's path
                acc.save_state(str(tmp))
                acc.wait_for_everyone()
                if acc.is_main_process:
                    manifest = {"epoch": epoch, "step": step, "top1": top1, **({} if batch is None else
                                                                               {"batch": batch}),
                                "files": _manifest(tmp)}
                    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            if acc.is_main_process:
                self._prune(best_epoch, step)
            acc.wait_for_everyone()
        return final

    def _prune(self, best_epoch: int, step: int) -> None:
        """Keep the ``keep_last`` newest epoch checkpoints and the best; of the step ones only one written at
        ``step`` (the one just written: an epoch checkpoint supersedes every step checkpoint up to its step)."""
        kept = [epoch for epoch, _ in self.complete()][: self.keep_last]
        for epoch, folder in self.complete():
            if epoch not in kept and epoch != best_epoch:
                shutil.rmtree(folder, ignore_errors=True)
        for at, folder in step_folders(self.root.parent):
            if at != step or (self.root / f"epoch_{self._epoch_at(step)}").is_dir():
                shutil.rmtree(folder, ignore_errors=True)

    def _epoch_at(self, step: int) -> int:
        """The epoch checkpoint written at ``step``, if any (-1)."""
        return next((epoch for epoch, folder in self.complete() if _manifest_step(folder) == step), -1)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> Path:
    """The model's weights as safetensors at ``path`` (atomically), with ``metadata`` in the header."""
    from safetensors.torch import save_model
    with held_signals(), atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    return Path(path)


def read_weights_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


"""The run folder: made before any data or model is built, written by one run at a time, never replaced by a resume.

``RunFolder.claim`` creates the folder (an impossible path is a ConfigError with the reason, before any work) and
takes an exclusive POSIX record lock (``fcntl.lockf``) on ``OUTPUT/.lock``, which holds the owner's pid and host: a
second run on the same folder is refused by name while the first lives, and the kernel drops the lock of a killed
run, so a stale lock never blocks a resume. (A record lock belongs to the process, so DataLoader workers forked
from it do not keep it alive after it died, as they would an ``flock``.) ``abandon`` undoes the claim when a
setting is refused before anything was written (the folders it created are removed again); ``release`` ends a run.

What a folder may hold decides what a run may do with it (``check_start``): a folder with checkpoints or final
weights is continued only with ``--resume``; a folder with neither (a run that stopped before its first epoch ended)
is started again.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from pathlib import Path

from dog_init.files import missing_parents, remove_created

from .config import ConfigError

__all__ = ["RunFolder", "check_start", "holds_results"]

LOCK = ".lock"


def holds_results(out: Path) -> list[str]:
    """What in ``out`` a fresh start would destroy: epoch checkpoints and final weights."""
    found = []
    root = out / "checkpoints"
    if root.is_dir() and any(p.name.startswith("epoch_") for p in root.iterdir()):
        found.append("checkpoints")
    found += [name for name in ("model.safetensors", "model_ema.safetensors") if (out / name).is_file()]
    return found


def check_start(out: Path, resume: str | None) -> None:
    """ConfigError when a run without ``--resume`` would replace what ``out`` holds."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output dir {str(out)!r} exists and is not a folder")
    if resume is None and out.is_dir() and (found := holds_results(out)):
        raise ConfigError(f"output dir {str(out)!r} holds a run ({', '.join(found)}); pass --resume auto to continue "
                          "it, or choose another --output-dir")


class RunFolder:
    """The output folder of one run, claimed by the main process (other processes hold no lock)."""

    def __init__(self, path: Path, main: bool = True):
        self.path, self.main = Path(path), main
        self._created: list[Path] = []
        self._fd: int | None = None

    def claim(self) -> "RunFolder":
        if not self.main:
            return self
        lock = self.path / LOCK
        try:
            self._created = missing_parents(lock)   # the run folder itself and any missing folder above it
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            remove_created(self._created)
            self._created = []
            raise ConfigError(f"output dir {str(self.path)!r} cannot be created or written: "
                              f"{err.strerror or err} ({str(err.filename or self.path)!r})") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"output dir {str(self.path)!r} is in use by another run ({holder}); wait for it "
                                  "to end or choose another --output-dir") from None
            raise ConfigError(f"output dir {str(self.path)!r}: cannot lock {LOCK} ({err})") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self._fd = fd
        return self

    def abandon(self) -> None:
        """Undo ``claim`` after a refusal: nothing of this run stays behind."""
        created = bool(self._created)
        self.release()
        if created:
            (self.path / LOCK).unlink(missing_ok=True)
            remove_created(self._created)
            self._created = []

    def release(self) -> None:
        # The lock file stays: removing it could let a run that opened it meanwhile lock an unlinked file.
        if self._fd is not None:
            os.close(self._fd)   # closing drops the lock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder['pid']} on {holder['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid is unknown"

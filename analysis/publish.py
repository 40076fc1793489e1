"""Putting a report folder in place whole: it is built in a hidden sibling ``.OUT.partial-<pid>-XXXXXXXX`` and renamed
to ``OUT`` only once complete, so readers never see half a report.

The writer's pid in the name is what lets a later run clean up after a writer that could not (SIGKILL, a power cut):
``remove_stale_partials`` removes the partial folders of ``OUT`` whose pid no longer runs, and keeps those of live
writers (a concurrent report into the same ``OUT``).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PARTIAL", "partial_folder", "writer_alive", "remove_stale_partials", "normal_permissions", "publish"]

PARTIAL = ".partial-"


def partial_folder(out_dir: Path) -> Path:
    """A new, empty ``.<OUT name>.partial-<this pid>-XXXXXXXX`` folder beside ``out_dir``."""
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{PARTIAL}{os.getpid()}-", dir=out_dir.parent))


def _writer_pid(name: str, out_name: str) -> int | None:
    """The pid in a partial folder name of ``out_name`` (``.OUT.partial-<pid>`` or ``.OUT.partial-<pid>-XXXX``),
    else None: names without a pid (other folders, older runs' random suffixes) are never ours to judge."""
    match = re.fullmatch(re.escape(f".{out_name}{PARTIAL}") + r"(\d{1,10})(?:-[^/]*)?", name)
    return int(match.group(1)) if match else None


def writer_alive(pid: int) -> bool:
    """False only when ``os.kill(pid, 0)`` says no such process (ProcessLookupError). A process of another user
    (PermissionError), or anything unclear, counts as alive: keeping a stale folder costs disk, removing a live
    writer's folder breaks its report. pid <= 0 would signal process groups, so it is never probed (alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Remove the partial folders of ``out_dir`` (beside it) whose writer pid no longer exists; return them.

    Only real folders (no symlinks) named ``.<OUT name>.partial-<pid>[-...]`` are considered; nothing else beside
    ``out_dir`` is touched, and the folders of live writers stay."""
    parent = out_dir.parent
    if not parent.is_dir():
        return []
    removed = []
    for path in sorted(parent.iterdir()):
        pid = _writer_pid(path.name, out_dir.name)
        if pid is None or path.is_symlink() or not path.is_dir() or writer_alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def normal_permissions(folder: Path) -> None:
    """mkdtemp / mkstemp (atomic_path) create 0700 / 0600; give the report the modes a plain mkdir/open would."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


@contextmanager
def _sigint_ignored():
    """Ctrl-C is ignored inside the block (main thread only; Python cannot set handlers elsewhere)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished report ``tmp`` to ``out_dir``; an existing folder is swapped out and removed only afterwards.

    Ctrl-C is ignored meanwhile: the report is complete by then, and an interrupt between the two renames, or after
    them, would leave ``out_dir`` missing or a hidden ``.OUT.old-*`` copy behind, while the run reported nothing
    changed."""
    with _sigint_ignored():
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            try:
                os.replace(out_dir, old / "report")
            except BaseException:
                old.rmdir()
                raise
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old is not None:
                os.replace(old / "report", out_dir)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

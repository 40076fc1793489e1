"""Safe file writing: a file or a folder appears at its destination whole or not at all.

``atomic_path(dest)`` writes a file into a hidden temporary sibling and renames it to ``dest`` when the block
succeeds; ``atomic_folder(dest)`` does the same for a folder (``.NAME.partial-<pid>-XXXXXXXX``, its files flushed to
disk before the rename, an existing folder swapped out only with ``replace=True``). On any failure the temporary file
or folder, and the folders made for it, are removed and ``dest`` is left as it was. A path that cannot be written
(a folder where a file is wanted, a file where a folder is needed, an unwritable or read-only place, a folder that
exists and may not be replaced) is refused with a ValueError naming it before anything is created.

The writer's pid in a partial folder's name lets a later run clean up after a writer that could not (SIGKILL, a
power cut): ``remove_stale_partials(dest)`` removes the partial folders of ``dest`` whose pid no longer runs and
keeps those of live writers.

Standard library only: importing this module must stay cheap (no torch).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

__all__ = ["check_output_file", "atomic_path", "atomic_folder", "remove_stale_partials", "writer_alive", "PARTIAL",
           "missing_parents", "remove_created", "strict_json"]

PARTIAL = ".partial-"   # ``.NAME.partial-<pid>-XXXXXXXX``: a folder being written for NAME
_OLD = ".old-"          # ``.NAME.old-<pid>-XXXXXXXX``: holds the folder NAME replaced, until it is removed


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _check_parent(path: Path, what: str) -> None:
    """ValueError unless the nearest existing folder above ``path`` is a writable folder."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be written: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(path)!r} cannot be written: folder {str(folder)!r} is not writable")


def missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first (what making ``path.parent`` creates)."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_created(created: list[Path]) -> None:
    """Remove the (empty) folders ``missing_parents`` listed and a write then made, deepest first."""
    for folder in created:   # deepest first
        try:
            folder.rmdir()
        except OSError:      # something else was put there meanwhile: keep it
            break


def strict_json(obj, **dumps) -> str:
    """``json.dumps(obj, **dumps)`` that every parser reads: NaN / inf are written as null (JSON has neither; jq,
    JavaScript and strict ``json.loads`` refuse a bare ``NaN``) and numpy scalars as plain numbers."""
    return json.dumps(_plain(obj), allow_nan=False, **dumps)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if type(x).__module__ == "numpy" and hasattr(x, "item"):   # a numpy scalar (numpy itself is not needed here)
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def check_output_file(path, what: str = "output") -> Path:
    """``path`` as a Path if a file can be written there, else ValueError naming ``what``, the path and the reason:
    it is a folder, a file stands where a folder is needed, or the nearest existing folder is not writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give a file path")
    _check_parent(path, what)
    return path


class atomic_path:
    """``with atomic_path(dest) as tmp: write(tmp)``: the file appears at ``dest`` only once complete.

    On any failure, writing or moving into place, the temporary file and the folders this made for it are removed
    and the error propagates; ``dest`` is checked first (``check_output_file``), so a folder or unwritable place is a
    ValueError naming it before anything is created."""

    def __init__(self, dest, suffix: str | None = None, what: str = "output"):
        self.dest = Path(dest)
        self.suffix = suffix if suffix is not None else self.dest.suffix
        self.what = what

    def __enter__(self) -> Path:
        check_output_file(self.dest, self.what)
        self.created = missing_parents(self.dest)
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.dest.name}.", suffix=self.suffix, dir=self.dest.parent)
        except BaseException as err:
            remove_created(self.created)
            if isinstance(err, OSError):   # e.g. a read-only or virtual file system: the path is the problem
                raise ValueError(f"{self.what} {str(self.dest)!r} cannot be written: {err.strerror or err}") from err
            raise
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                os.chmod(self.tmp, 0o666 & ~_umask())   # mkstemp creates 0600; give the file the usual permissions
                os.replace(self.tmp, self.dest)
                return False
            except BaseException as err:
                self._clean()
                if isinstance(err, OSError):   # e.g. a folder appeared at dest meanwhile
                    raise ValueError(f"{self.what} {str(self.dest)!r} cannot be written: {err.strerror or err}") \
                        from err
                raise
        self._clean()
        return False

    def _clean(self) -> None:
        self.tmp.unlink(missing_ok=True)
        remove_created(self.created)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_files(folder: Path) -> None:
    """Flush every file under ``folder`` to disk before a rename makes them visible (a power cut must not leave a
    complete-looking folder whose data never reached the disk)."""
    for p in folder.rglob("*"):
        if p.is_file():
            _fsync(p)


@contextmanager
def _signals_held(came: list[int]):
    """SIGINT / SIGTERM arriving inside the block are appended to ``came`` instead of acting; the caller delivers
    them afterwards (``_deliver``) to the handlers in place before, so a stop is postponed, never lost. Main thread
    only; elsewhere Python cannot set handlers and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if handler is None:   # installed outside Python: leave it alone
                continue
            previous[sig] = handler
            signal.signal(sig, lambda number, frame: came.append(number))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _deliver(came: list[int]) -> None:
    for sig in dict.fromkeys(came):
        signal.raise_signal(sig)


class atomic_folder:
    """``with atomic_folder(dest) as tmp: write files into tmp``: the folder appears at ``dest`` only once complete.

    ``tmp`` is a new, empty sibling ``.<dest name>.partial-<this pid>-XXXXXXXX``. When the block succeeds its files
    are flushed to disk and it is renamed to ``dest``. An existing ``dest`` is refused (ValueError, before anything
    is created) unless ``replace=True``; then it is renamed into a ``.<dest name>.old-<pid>-XXXXXXXX`` sibling, the
    new folder renamed into place, and only then the old one deleted (SIGINT / SIGTERM wait until both renames are
    done). On any failure, in the block or moving into place, the temporary folder and the folders made for it are
    removed, ``dest`` is left as it was, and the error propagates (an OSError of the move as a ValueError naming
    ``dest``)."""

    def __init__(self, dest, *, replace: bool = False, what: str = "output"):
        self.dest, self.replace, self.what = Path(dest), replace, what

    def _check_dest(self) -> None:
        if self.dest.exists() or self.dest.is_symlink():
            if not self.replace:
                raise ValueError(f"{self.what} {str(self.dest)!r} already exists")
            if not self.dest.is_dir():
                raise ValueError(f"{self.what} {str(self.dest)!r} is a file, not a folder")

    def __enter__(self) -> Path:
        self._check_dest()
        _check_parent(self.dest, self.what)
        self.created = missing_parents(self.dest)
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}{PARTIAL}{os.getpid()}-",
                                             dir=self.dest.parent))
        except BaseException as err:
            remove_created(self.created)
            if isinstance(err, OSError):
                raise ValueError(f"{self.what} {str(self.dest)!r} cannot be written: {err.strerror or err}") from err
            raise
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._clean()
            return False
        came: list[int] = []
        try:
            try:
                _fsync_files(self.tmp)
                self.tmp.chmod(0o777 & ~_umask())   # mkdtemp creates 0700; give the folder what mkdir would
                self._check_dest()                   # a folder (or file) may have appeared meanwhile
                with _signals_held(came):
                    old = self._swap()
            except BaseException as err:
                self._clean()
                if isinstance(err, OSError):
                    raise ValueError(f"{self.what} {str(self.dest)!r} cannot be written: {err.strerror or err}") \
                        from err
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            _deliver(came)   # a stop that came during the renames, now that dest is whole again
        return False

    def _swap(self) -> Path | None:
        """Rename ``tmp`` to ``dest``; an existing ``dest`` goes into a holder folder first, which is returned (to
        delete) and restored to ``dest`` if the second rename fails."""
        old = None
        if self.dest.exists() or self.dest.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}{_OLD}{os.getpid()}-", dir=self.dest.parent))
            try:
                os.replace(self.dest, old / self.dest.name)
            except BaseException:
                old.rmdir()
                raise
        try:
            os.replace(self.tmp, self.dest)
        except BaseException:
            if old is not None:
                os.replace(old / self.dest.name, self.dest)
                old.rmdir()
            raise
        try:
            _fsync(self.dest.parent)   # make the renames themselves durable
        except OSError:
            pass
        return old

    def _clean(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        remove_created(self.created)


def _writer_pid(name: str, dest_name: str) -> int | None:
    """The pid in a partial folder name of ``dest_name`` (``.NAME.partial-<pid>`` or ``.NAME.partial-<pid>-XXXX``),
    else None: names without a pid (other folders, older writers' names) are never ours to judge."""
    match = re.fullmatch(re.escape(f".{dest_name}{PARTIAL}") + r"(\d{1,10})(?:-[^/]*)?", name)
    return int(match.group(1)) if match else None


def writer_alive(pid: int) -> bool:
    """False only when ``os.kill(pid, 0)`` says no such process (ProcessLookupError). A process of another user
    (PermissionError), or anything unclear, counts as alive: keeping a stale folder costs disk, removing a live
    writer's folder breaks its output. pid <= 0 would signal process groups, so it is never probed (alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True


def remove_stale_partials(dest) -> list[Path]:
    """Remove the partial folders of ``dest`` (its siblings ``.<dest name>.partial-<pid>[-...]``) whose writer pid
    no longer exists; return them.

    Only real folders (no symlinks) with such a name are considered; nothing else beside ``dest`` is touched, and
    the folders of live writers stay."""
    dest = Path(dest)
    parent = dest.parent
    if not parent.is_dir():
        return []
    removed = []
    for path in sorted(parent.iterdir()):
        pid = _writer_pid(path.name, dest.name)
        if pid is None or path.is_symlink() or not path.is_dir() or writer_alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed

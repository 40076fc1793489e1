"""``JsonLines``: a small JSONL log (``census.jsonl``, ``metrics.jsonl``) rewritten atomically, one line per key.

Standard library and ``dog_init.files`` only, so readers of run folders (``python -m train.timeline``) need not import
the trainer or the census.
"""
from __future__ import annotations

import json
from pathlib import Path

from dog_init.files import atomic_path, strict_json

__all__ = ["JsonLines"]


class JsonLines:
    """A small JSONL log rewritten atomically; each record is keyed so that writing it twice keeps one line."""

    def __init__(self, path: Path, key=("kind", "epoch", "step")):
        self.path, self.key = Path(path), key

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:   # a line cut short by a crash: the run that resumes rewrites it
                continue
        return records

    def _write(self, records: list[dict]) -> None:
        # JSON has no NaN / Infinity: a non-finite number is written as null, which every parser reads.
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(strict_json(r) + "\n" for r in records))

    def keep_until(self, step: int) -> None:
        """Drop records after ``step`` (those a resumed run will write again)."""
        if self.path.is_file():
            self._write([r for r in self.read() if r.get("step", 0) <= step])

    def append(self, record: dict) -> None:
        key = tuple(record.get(k) for k in self.key)
        self._write([r for r in self.read() if tuple(r.get(k) for k in self.key) != key] + [record])


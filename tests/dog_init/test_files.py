"""dog_init.files, the one file-writing module of all three packages: a failed write leaves neither a temporary file
nor a folder made for it, and a partial folder names the process writing it."""
from __future__ import annotations

import os

import pytest

from dog_init.files import atomic_folder, atomic_path
from tests.helpers.files import listing


def test_atomic_path_cleans_up_when_the_destination_is_a_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match=r"'.*taken' is a folder"):
        with atomic_path(tmp_path / "taken") as tmp:
            tmp.write_text("x")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "new" / "deeper" / "f.txt") as tmp:
            tmp.write_text("x")
            raise RuntimeError("boom")
    assert listing(tmp_path) == ["taken"]          # no temp file, no folder made for it


def test_atomic_path_cleans_up_when_the_final_move_fails(tmp_path):
    target = tmp_path / "late"
    with pytest.raises(ValueError, match="cannot be written"):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            target.mkdir()                          # a folder appears at the destination meanwhile
    assert listing(tmp_path) == ["late"]


def test_partial_folder_names_its_writer(tmp_path):
    with atomic_folder(tmp_path / "rep") as folder:
        assert folder.name.startswith(f".rep.partial-{os.getpid()}-"), folder.name

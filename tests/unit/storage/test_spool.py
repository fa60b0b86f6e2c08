"""Spool files: unnamed where possible, named only by link_unnamed, read from their start."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pytest
from tests.helpers.spool import open_spool_files, spooled

from roost.errors import StorageError
from roost.storage import spool
from roost.storage.local import TEMP_PREFIX
from roost.storage.spool import (
    SPOOL_PREFIX,
    can_spool_unnamed,
    check_size,
    is_unnamed,
    link_unnamed,
    open_spool,
    own_reader,
    pieces,
    read_whole,
)

needs_tmpfile = pytest.mark.skipif(
    not can_spool_unnamed(Path(tempfile.gettempdir())),
    reason="needs O_TMPFILE",
)


def test_a_spool_file_has_no_name_and_vanishes_when_closed(tmp_path: Path) -> None:
    with open_spool(str(tmp_path)) as file:
        file.write(b"pack bytes")
        assert os.listdir(tmp_path) == [] and is_unnamed(file)
        assert len(open_spool_files(tmp_path)) == 1
    assert open_spool_files(tmp_path) == []


def test_without_o_tmpfile_a_spool_file_is_unlinked_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file system without O_TMPFILE (NFS): a named temp file, unlinked once created
    monkeypatch.setattr(spool, "_open_unnamed", lambda _directory: None)
    monkeypatch.setattr(spool.tempfile, "_O_TMPFILE_WORKS", False, raising=False)
    assert SPOOL_PREFIX.startswith(TEMP_PREFIX)  # never listed, even for that moment
    with open_spool(str(tmp_path)) as file:
        file.write(b"pack bytes")
        assert os.listdir(tmp_path) == [] and is_unnamed(file)
        assert not link_unnamed(file, tmp_path, "object")  # it cannot be named: copied
    assert not can_spool_unnamed(tmp_path) and os.listdir(tmp_path) == []


def test_spool_files_go_to_tmpdir_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool.tempfile, "tempdir", str(tmp_path))  # what TMPDIR sets
    with open_spool() as file:
        assert len(open_spool_files(tmp_path)) == 1 and is_unnamed(file)


@needs_tmpfile
def test_link_unnamed_names_the_file_itself_once(tmp_path: Path) -> None:
    with open_spool(str(tmp_path)) as file:
        file.write(b"pack bytes")
        file.flush()
        assert link_unnamed(file, tmp_path, "object")
        with pytest.raises(FileExistsError):
            link_unnamed(file, tmp_path, "object")
        assert os.stat(tmp_path / "object").st_ino == os.fstat(file.fileno()).st_ino
    assert (tmp_path / "object").read_bytes() == b"pack bytes"
    assert not is_unnamed(io.BytesIO(b"x"))


def test_check_size_and_pieces_read_the_whole_file_from_its_start() -> None:
    file = io.BytesIO(b"0123456789")
    file.seek(4)
    check_size(file, 10)
    with pytest.raises(ValueError, match="holds 10 bytes, not the 11"):
        check_size(file, 11)
    file.seek(8)
    assert list(pieces(file, 10, chunk=4)) == [b"0123", b"4567", b"89"]
    assert read_whole(file, 10) == b"0123456789"
    with pytest.raises(StorageError, match="shorter"):
        list(pieces(file, 11))
    with pytest.raises(StorageError, match="shorter"):
        read_whole(file, 11)


def test_own_reader_reads_at_its_own_position_after_the_original_is_closed(
    tmp_path: Path,
) -> None:
    file = spooled(b"0123456789", str(tmp_path))
    first, second = own_reader(file, 10), own_reader(file, 10)
    file.seek(3)
    file.close()
    assert first.read(4) == b"0123"
    assert second.read() == b"0123456789"  # the other reader's reads did not move it
    assert first.read() == b"456789"
    first.seek(-2, os.SEEK_END)
    assert first.read() == b"89" and first.tell() == 10
    with pytest.raises(ValueError, match="negative"):
        first.seek(-20, os.SEEK_END)
    first.close()
    second.close()
    assert open_spool_files(tmp_path) == []


def test_own_reader_of_a_file_without_descriptor_is_a_copy() -> None:
    original = io.BytesIO(b"in memory")
    with own_reader(original, 9) as own:
        original.close()
        assert own.read() == b"in memory"

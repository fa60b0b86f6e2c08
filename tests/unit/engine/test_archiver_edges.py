"""Archiver edge cases: files that change while read, and --one-file-system."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.engine import filereader
from roost.engine.archiver import Archiver, BackupOptions
from roost.engine.filters import ExcludeRules
from roost.engine.keys import KdfParams
from roost.engine.repository import Repository
from roost.storage.memory import MemoryBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)


def _repo() -> Repository:
    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    return repo


def test_file_changed_while_read_is_reported_and_read_again_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    growing = src / "log.txt"
    growing.write_bytes(b"first line\n")
    real_chunk = filereader.FileReader._chunk

    def append_while_reading(self, fd, extents, expected):  # type: ignore[no-untyped-def]
        result = real_chunk(self, fd, extents, expected)
        with open(growing, "ab") as f:  # the writer appends while we read
            f.write(b"second line\n")
        return result

    monkeypatch.setattr(filereader.FileReader, "_chunk", append_while_reading)
    repo = _repo()
    first, summary = Archiver(repo).run([str(src)])
    assert first.missed == [{"path": str(growing), "reason": "changed while being read"}]
    assert summary.files_missed == 1
    monkeypatch.setattr(filereader.FileReader, "_chunk", real_chunk)
    second, summary = Archiver(repo, BackupOptions(parent=first)).run([str(src)])
    assert second.missed == []
    assert (summary.files_changed, summary.files_unchanged) == (1, 0)  # read again


@pytest.fixture()
def mounted_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "src" / "other-fs"
    mount.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_one_file_system_keeps_the_mount_point_but_not_its_contents(
    mounted_tmpfs: Path,
) -> None:
    (mounted_tmpfs / "inside.txt").write_bytes(b"on another filesystem")
    src = mounted_tmpfs.parent
    (src / "here.txt").write_bytes(b"on this filesystem")
    repo = _repo()
    rules = ExcludeRules(one_file_system=True)
    snap, _ = Archiver(repo, BackupOptions(rules=rules)).run([str(src)])
    names = {os.fsdecode(node.name) for _, nodes in repo.walk_trees(snap.tree) for node in nodes}
    assert {"here.txt", "other-fs"} <= names
    assert "inside.txt" not in names
    everything, _ = Archiver(repo).run([str(src)])
    all_names = {os.fsdecode(n.name) for _, ns in repo.walk_trees(everything.tree) for n in ns}
    assert "inside.txt" in all_names

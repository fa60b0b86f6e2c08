"""Backing up from a snapshot's read path records, and restores to, the original path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from roost.engine.archiver import Archiver, BackupOptions
from roost.engine.keys import KdfParams
from roost.engine.repository import Repository
from roost.engine.restorer import Restorer
from roost.storage.memory import MemoryBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)


def test_snapshot_records_original_paths_and_missed_files(tmp_path: Path) -> None:
    live = tmp_path / "live"
    (live / "sub").mkdir(parents=True)
    (live / "sub" / "a.txt").write_bytes(b"alpha")
    (live / "b.txt").write_bytes(b"beta")
    frozen = tmp_path / "frozen"  # stands in for a read-only filesystem snapshot
    shutil.copytree(live, frozen)
    (frozen / "sub" / "a.txt").write_bytes(b"ALPHA")  # the snapshot's content wins
    (frozen / ".roost-snap-otherjob").mkdir()  # another job's btrfs snapshot is never read
    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    mapping = {os.fsencode(frozen): os.fsencode(live)}
    snap, _ = Archiver(repo, BackupOptions(path_map=mapping)).run([str(frozen)])
    assert snap.paths == [str(live)]

    second, summary = Archiver(
        repo,
        BackupOptions(
            parent=snap, path_map=mapping, force_read=frozenset({os.fsencode(live / "b.txt")})
        ),
    ).run([str(frozen)])
    assert (summary.files_unchanged, summary.files_changed) == (1, 1)  # b.txt forced

    target = tmp_path / "restore"
    Restorer(repo, second, target).run()
    restored = target / live.relative_to("/")
    assert (restored / "sub" / "a.txt").read_bytes() == b"ALPHA"
    assert (restored / "b.txt").read_bytes() == b"beta"
    assert not (restored / ".roost-snap-otherjob").exists()
    assert not (target / frozen.relative_to("/")).exists()

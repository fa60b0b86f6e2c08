"""Round trip: every file type, metadata kind and awkward name comes back exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.helpers.compare import assert_trees_equal, snapshot_tree
from tests.helpers.treegen import make_awkward_tree

from roost.engine.archiver import Archiver, BackupOptions
from roost.engine.keys import KdfParams
from roost.engine.repository import Repository
from roost.engine.restorer import Restorer
from roost.storage.local import LocalBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    repository, _ = Repository.init(
        LocalBackend(tmp_path / "repo"), "pw", kdf=WEAK, pack_size=256 * 1024
    )
    return repository


def test_awkward_tree_round_trips_exactly(tmp_path: Path, repo: Repository) -> None:
    src = tmp_path / "src"
    make_awkward_tree(src)
    before = snapshot_tree(src)
    snap, summary = Archiver(repo).run([str(src)])
    assert summary.files_missed == 0
    assert snapshot_tree(src) == before  # backing up changed nothing, atimes included
    target = tmp_path / "restore"
    result = Restorer(repo, snap, target).run()
    assert result.warnings == []
    assert_trees_equal(src, target / src.relative_to("/"))


def test_incremental_round_trip_after_changes(tmp_path: Path, repo: Repository) -> None:
    src = tmp_path / "src"
    make_awkward_tree(src)
    first, _ = Archiver(repo).run([str(src)])
    changed = src / "changed.bin"
    changed.write_bytes(os.urandom(300_000))
    second, summary = Archiver(repo, BackupOptions(parent=first)).run([str(src)])
    assert summary.files_new == 1
    assert summary.files_changed == 0
    assert summary.bytes_read == 300_000
    target = tmp_path / "restore"
    Restorer(repo, second, target).run()
    assert_trees_equal(src, target / src.relative_to("/"))


def test_restore_selected_path_only(tmp_path: Path, repo: Repository) -> None:
    src = tmp_path / "src"
    (src / "keep" / "deep").mkdir(parents=True)
    (src / "keep" / "deep" / "a.txt").write_bytes(b"alpha")
    (src / "other").mkdir()
    (src / "other" / "b.txt").write_bytes(b"beta")
    snap, _ = Archiver(repo).run([str(src)])
    target = tmp_path / "restore"
    Restorer(repo, snap, target, includes=[str(src / "keep")]).run()
    restored = target / src.relative_to("/")
    assert (restored / "keep" / "deep" / "a.txt").read_bytes() == b"alpha"
    assert not (restored / "other").exists()


def test_round_trip_through_worker_processes(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roost.engine import procreader

    monkeypatch.setattr(procreader, "BATCH_FILES", 3)  # tiny batches: the pool must start
    src = tmp_path / "src"
    make_awkward_tree(src)
    snap, summary = Archiver(repo, processes=2).run([str(src)])
    assert summary.files_missed == 0
    assert summary.bytes_read > 0
    target = tmp_path / "restore"
    assert Restorer(repo, snap, target).run().warnings == []
    assert_trees_equal(src, target / src.relative_to("/"))
    _, summary = Archiver(repo, BackupOptions(parent=snap), processes=2).run([str(src)])
    assert (summary.files_new, summary.files_changed, summary.bytes_read) == (0, 0, 0)

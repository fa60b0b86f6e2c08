"""Prune running while a backup runs: the backup's snapshot must be complete and exact."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import BinaryIO

from roost.engine.archiver import Archiver, BackupOptions
from roost.engine.keys import KdfParams
from roost.engine.prune import PruneOptions, prune
from roost.engine.repository import Repository
from roost.engine.restorer import Restorer
from roost.storage.base import Backend
from roost.storage.local import LocalBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)


class SlowPacks(LocalBackend):
    """Delays every pack upload so a backup stays in flight while prune runs."""

    def __init__(self, root: Path, delay: float) -> None:
        super().__init__(root)
        self.delay = delay

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        assert key.startswith("data/")  # packs, and only packs, are stored from spool files
        time.sleep(self.delay)
        super().put_file(key, file, size, overwrite=overwrite)


def _make_files(root: Path, prefix: str, count: int, size: int, seed: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"{prefix}{i:03d}").write_bytes(os.urandom(size) if seed else b"")


def _read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _restore_equals(repo: Repository, snapshot_id: str, src: Path, target: Path) -> None:
    snap = repo.find_snapshot(snapshot_id)
    Restorer(repo, snap, target).run()
    restored = target / src.relative_to("/")
    assert _read_tree(restored) == _read_tree(src)


def test_prune_during_backup_keeps_new_snapshot_complete(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_files(src, "shared", 30, 150_000, seed=1)
    backend = SlowPacks(tmp_path / "repo", delay=0.0)
    repo, _ = Repository.init(backend, "pw", kdf=WEAK, pack_size=64 * 1024)
    old, _ = Archiver(repo).run([str(src)])
    # the running backup re-uses every blob of `old` (dedup) and adds new data
    _make_files(src / "new", "fresh", 30, 150_000, seed=2)
    backend.delay = 0.05
    result: dict[str, object] = {}

    def backup() -> None:
        repo2 = Repository.open(backend, "pw")
        result["snap"], _ = Archiver(repo2, BackupOptions(parent=None)).run([str(src)])

    worker = threading.Thread(target=backup)
    worker.start()
    time.sleep(0.3)  # the backup holds its lease and has loaded the index
    repo.delete_snapshot(old.id)  # now nothing stored references the shared data
    pruner = Repository.open(backend, "pw")
    report = prune(pruner, PruneOptions())
    assert report.tombstoned_blobs > 0
    assert report.deferred_blobs == report.tombstoned_blobs  # the backup's lease protects them
    assert report.deleted_packs == 0
    worker.join()
    backend.delay = 0.0

    final = Repository.open(backend, "pw")
    after = prune(final, PruneOptions())  # revives what the new snapshot uses
    assert after.revived_blobs > 0
    snap = result["snap"]
    assert isinstance(snap, type(old))
    _restore_equals(Repository.open(backend, "pw"), snap.id, src, tmp_path / "restore")
    assert _check_clean(backend)


def test_backup_started_after_tombstone_uploads_again(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_files(src, "f", 10, 100_000, seed=1)
    backend = LocalBackend(tmp_path / "repo")
    repo, _ = Repository.init(backend, "pw", kdf=WEAK, pack_size=64 * 1024)
    old, _ = Archiver(repo).run([str(src)])
    repo.delete_snapshot(old.id)
    # tombstone without deleting: pretend a backup is running by holding a lease
    from roost.engine.lease import Lease

    with Lease(Repository.open(backend, "pw"), "backup"):
        report = prune(Repository.open(backend, "pw"), PruneOptions())
    assert report.deleted_packs == 0 and report.tombstoned_blobs > 0
    new, summary = Archiver(Repository.open(backend, "pw")).run([str(src)])
    assert summary.bytes_new >= 10 * 100_000  # tombstoned data counts as absent
    prune(Repository.open(backend, "pw"), PruneOptions())
    _restore_equals(Repository.open(backend, "pw"), new.id, src, tmp_path / "restore")
    assert _check_clean(backend)


def test_repack_keeps_live_blobs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_files(src, "f", 40, 20_000, seed=1)
    backend = LocalBackend(tmp_path / "repo")
    repo, _ = Repository.init(backend, "pw", kdf=WEAK, pack_size=512 * 1024)
    first, _ = Archiver(repo).run([str(src)])
    for i in range(0, 40, 2):
        (src / f"f{i:03d}").unlink()
    second, _ = Archiver(repo, BackupOptions(parent=first)).run([str(src)])
    repo.delete_snapshot(first.id)
    report = prune(Repository.open(backend, "pw"), PruneOptions(max_unused_fraction=0.1))
    assert report.repacked_packs >= 1
    assert report.bytes_freed > 0
    _restore_equals(Repository.open(backend, "pw"), second.id, src, tmp_path / "restore")
    assert _check_clean(backend)


def _check_clean(backend: Backend) -> bool:
    from roost.engine.check import check_repository

    report = check_repository(Repository.open(backend, "pw"), read_data=True)
    assert report.errors == []
    return report.ok

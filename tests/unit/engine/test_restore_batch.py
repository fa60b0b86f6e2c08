"""Restore in batches: coalesced pack reads, worker processes, retries and name conflicts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.compare import assert_trees_equal
from tests.helpers.treegen import make_awkward_tree

from roost.engine import restore_dispatch
from roost.engine.archiver import Archiver
from roost.engine.keys import KdfParams
from roost.engine.pack import pack_key
from roost.engine.progress import RestoreProgress
from roost.engine.repository import Repository
from roost.engine.restore_batch import FileJob, FileOutcome, RangeReader, Worker, WorkerSetup
from roost.engine.restore_dispatch import BatchDispatcher
from roost.engine.restorer import Restorer
from roost.engine.snapshot import Snapshot
from roost.storage.local import LocalBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    repository, _ = Repository.init(
        LocalBackend(tmp_path / "repo"), "pw", kdf=WEAK, pack_size=256 * 1024
    )
    return repository


def _small_files(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"f{i:04d}.txt").write_bytes(f"file {i}\n".encode() * (i % 50 + 1))


class CountingReads(LocalBackend):
    """Counts ranged reads (the restorer's thread path goes through the backend)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ranges = 0

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if key.startswith("data/"):
            self.ranges += 1
        return super().get_range(key, offset, length)


def test_awkward_tree_through_worker_processes(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore_dispatch, "PROCESS_MIN_FILES", 0)
    monkeypatch.setattr(restore_dispatch, "BATCH_FILES", 3)
    started: list[Worker] = []

    class Counted(Worker):
        def __init__(self, setup: WorkerSetup) -> None:
            super().__init__(setup)
            started.append(self)

    monkeypatch.setattr(restore_dispatch, "Worker", Counted)
    src = tmp_path / "src"
    make_awkward_tree(src)
    snap, _ = Archiver(repo).run([str(src)])
    target = tmp_path / "restore"
    assert Restorer(repo, snap, target, processes=2).run().warnings == []
    assert len(started) == 2
    assert all(worker.process.returncode == 0 for worker in started)
    assert_trees_equal(src, target / src.relative_to("/"))


def test_a_killed_worker_s_batches_are_redone(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore_dispatch, "PROCESS_MIN_FILES", 0)
    monkeypatch.setattr(restore_dispatch, "BATCH_FILES", 7)

    class Doomed(Worker):
        def send(self, jobs: list[FileJob]) -> None:
            super().send(jobs)
            if self.pending == 2:
                self.process.kill()  # dies with a batch or two unanswered

    monkeypatch.setattr(restore_dispatch, "Worker", Doomed)
    deaths: list[Worker] = []
    real_died = BatchDispatcher._worker_died

    def died(self: BatchDispatcher, worker: Worker, queue: Any) -> None:
        deaths.append(worker)
        real_died(self, worker, queue)

    monkeypatch.setattr(BatchDispatcher, "_worker_died", died)
    src = tmp_path / "src"
    _small_files(src, 120)
    snap, _ = Archiver(repo).run([str(src)])
    target = tmp_path / "restore"
    summary = Restorer(repo, snap, target, processes=2).run()
    assert len(deaths) == 2
    assert summary.warnings == [] and summary.files == 120
    assert_trees_equal(src, target / src.relative_to("/"))


def test_small_files_are_read_with_few_ranged_reads(tmp_path: Path) -> None:
    backend = CountingReads(tmp_path / "repo")
    repo, _ = Repository.init(backend, "pw", kdf=WEAK)
    src = tmp_path / "src"
    _small_files(src, 300)
    snap, _ = Archiver(repo).run([str(src)])
    reopened = Repository.open(backend, "pw")
    target = tmp_path / "restore"
    summary = Restorer(reopened, snap, target, processes=0).run()
    assert summary.files == 300 and summary.warnings == []
    assert backend.ranges < 20  # one read per blob would be 300 (plus the trees)
    assert_trees_equal(src, target / src.relative_to("/"))


def _flip_first_blob(repo: Repository, root: Path, snap: Snapshot, name: str) -> None:
    [node] = [
        n for _, nodes in repo.walk_trees(snap.tree) for n in nodes if n.name == name.encode()
    ]
    loc = repo.index.find(node.content[0])
    assert loc is not None
    path = root / pack_key(loc.pack)
    data = bytearray(path.read_bytes())
    data[loc.offset + loc.length // 2] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("processes", [0, 2])
def test_damaged_chunk_fails_only_its_file_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    monkeypatch.setattr(restore_dispatch, "PROCESS_MIN_FILES", 0)
    repo, _ = Repository.init(LocalBackend(tmp_path / "repo"), "pw", kdf=WEAK)
    src = tmp_path / "src"
    _small_files(src, 200)
    snap, _ = Archiver(repo).run([str(src)])
    _flip_first_blob(repo, tmp_path / "repo", snap, "f0100.txt")
    target = tmp_path / "restore"
    summary = Restorer(repo, snap, target, processes=processes).run()
    restored = target / src.relative_to("/")
    [warning] = summary.warnings
    assert warning.startswith(f"{restored / 'f0100.txt'}: ")
    assert "the file was not restored" in warning
    assert summary.files == 199
    assert not (restored / "f0100.txt").exists()
    for i in (99, 101, 199):
        name = f"f{i:04d}.txt"
        assert (restored / name).read_bytes() == (src / name).read_bytes()


@pytest.mark.parametrize(("policy", "kept"), [("overwrite", False), ("skip", True)])
def test_name_appearing_in_a_fresh_directory_follows_the_conflict_policy(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch, policy: str, kept: bool
) -> None:
    src = tmp_path / "src"
    _small_files(src, 10)
    snap, _ = Archiver(repo).run([str(src)])
    real = restore_dispatch.write_batch

    def racing(key: Any, backend: RangeReader, jobs: list[FileJob]) -> list[FileOutcome]:
        for job in jobs:  # someone else creates the names just before the batch runs
            if job[0].endswith(b"f0003.txt"):
                Path(os.fsdecode(job[0])).write_bytes(b"theirs")
        return real(key, backend, jobs)

    monkeypatch.setattr(restore_dispatch, "write_batch", racing)
    target = tmp_path / "restore"
    summary = Restorer(repo, snap, target, conflict=policy, processes=0).run()
    restored = target / src.relative_to("/") / "f0003.txt"
    assert restored.read_bytes() == (b"theirs" if kept else (src / "f0003.txt").read_bytes())
    assert summary.files == (9 if kept else 10)
    assert summary.skipped == (1 if kept else 0)


def test_an_error_in_the_walk_stops_the_workers_and_leaves_no_unreported_file(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore_dispatch, "PROCESS_MIN_FILES", 0)
    monkeypatch.setattr(restore_dispatch, "BATCH_FILES", 5)
    src = tmp_path / "src"
    _small_files(src, 100)
    snap, _ = Archiver(repo).run([str(src)])
    reported: list[bytes] = []

    class Cancelling(RestoreProgress):
        def file_done(self, path: bytes) -> None:
            reported.append(path)
            if len(reported) == 12:
                raise KeyboardInterrupt  # as a cancelled job does, from a progress call

    restorer = Restorer(repo, snap, tmp_path / "t", progress=Cancelling(), processes=2)
    with pytest.raises(KeyboardInterrupt):
        restorer.run()
    left = sorted(os.fsencode(p) for p in (tmp_path / "t").rglob("f*.txt"))
    assert set(reported) <= set(left)
    for path in left:  # whatever is left is complete
        name = os.path.basename(path).decode()
        assert Path(os.fsdecode(path)).read_bytes() == (src / name).read_bytes()

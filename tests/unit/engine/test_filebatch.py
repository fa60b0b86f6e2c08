"""Regular files scanned in batches (procreader.py, filebatch.py): outcomes, sealing, limits.

The scanner is exercised in this process for exact outcomes; the archiver then runs it in real
worker processes with tiny limits, so batches are cut short, files are handed back to the main
process (hardlinks, big files) and a killed worker fails the backup with its own error.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import signal
from pathlib import Path

import pytest
from tests.helpers.compare import assert_trees_equal
from tests.helpers.treegen import make_awkward_tree

from roost.engine import compress, procreader
from roost.engine.archiver import Archiver, BackupOptions
from roost.engine.crypto import Key, MasterKey
from roost.engine.keys import KdfParams
from roost.engine.pack import DATA_BLOB, blob_aad
from roost.engine.progress import BackupProgress
from roost.engine.repository import Repository
from roost.engine.restorer import Restorer
from roost.engine.tree import Node
from roost.errors import BackupWorkerError
from roost.storage.local import LocalBackend

MIB = 1024 * 1024


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    weak = KdfParams(memory_kib=64, iterations=1, lanes=1)
    repository, _ = Repository.init(
        LocalBackend(tmp_path / "repo"), "pw", kdf=weak, pack_size=256 * 1024
    )
    return repository


def _setup(master: MasterKey, **limits: int | None) -> procreader.WorkerSetup:
    return procreader.WorkerSetup(master, 64 * 1024, 256 * 1024, MIB, **limits)  # type: ignore[arg-type]


def _item(path: Path, parent: procreader.ParentKey | None = None) -> procreader.ScanItem:
    return bytes(path), path.name.encode(), parent


def _key_of(path: Path) -> procreader.ParentKey:
    st = path.lstat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def test_every_node_field_survives_pickling() -> None:
    values: dict[str, object] = {}
    for number, spec in enumerate(dataclasses.fields(Node)):
        values[spec.name] = {
            "name": b"n\xff",
            "type": "file",
            "user": "alice",
            "group": "staff",
            "content": [b"c" * 32],
            "extents": [(0, 4096)],
            "subtree": b"s" * 32,
            "target": b"t",
            "xattrs": [(b"user.k", b"v")],
        }.get(spec.name, number + 1)
    node = Node(**values)  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(node)) == node


def test_scan_outcomes(tmp_path: Path) -> None:
    master = MasterKey.generate()
    scanner = procreader.BatchScanner(_setup(master, larger_than=100_000, max_file_size=50_000))
    (tmp_path / "new.txt").write_bytes(b"hello world\n" * 10)
    (tmp_path / "same.txt").write_bytes(b"unchanged")
    (tmp_path / "big.bin").write_bytes(b"b" * 60_000)
    (tmp_path / "huge.bin").write_bytes(b"h" * 200_000)
    (tmp_path / "linked.txt").write_bytes(b"two names")
    os.link(tmp_path / "linked.txt", tmp_path / "second-name.txt")
    items = [
        _item(tmp_path / "new.txt"),
        _item(tmp_path / "same.txt", _key_of(tmp_path / "same.txt")),
        _item(tmp_path / "big.bin"),
        _item(tmp_path / "huge.bin"),
        _item(tmp_path / "linked.txt"),
        _item(tmp_path / "gone.txt"),
    ]
    results, candidates = scanner.scan(1, items)
    assert [r.outcome for r in results] == [
        procreader.STORED,
        procreader.UNCHANGED,
        procreader.MAIN,  # above max_file_size: read by the main process's threads
        procreader.EXCLUDED,  # above the --exclude-larger-than limit
        procreader.MAIN,  # hardlinked: the main process reads each inode once
        procreader.MISSED,
    ]
    assert results[5].problem == "vanished during backup"
    stored = results[0].node
    assert stored is not None and stored.name == b"new.txt" and stored.size == 120
    assert results[0].bytes_read == 120
    key = Key(master)
    assert candidates == [(DATA_BLOB, key.chunk_id(b"hello world\n" * 10), 120)]
    assert results[1].node is not None and results[1].node.content == []  # caller fills it


def test_seal_puts_the_wanted_blobs_end_to_end(tmp_path: Path) -> None:
    master = MasterKey.generate()
    scanner = procreader.BatchScanner(_setup(master))
    for name, text in (("a", b"alpha " * 50), ("b", b"beta " * 70), ("c", b"gamma " * 90)):
        (tmp_path / name).write_bytes(text)
    _, candidates = scanner.scan(7, [_item(tmp_path / n) for n in "abc"])
    wanted = [candidates[2][1], candidates[0][1]]  # the main process wants two, in its order
    segment, entries = scanner.seal(7, wanted)
    key = Key(master)
    offset = 0
    plain = []
    for blob_type, blob_id, length, raw_length, method in entries:
        payload = key.decrypt(segment[offset : offset + length], blob_aad(blob_type, blob_id))
        plain.append(compress.decompress(method, payload, raw_length))
        offset += length
    assert offset == len(segment)
    assert plain == [b"gamma " * 90, b"alpha " * 50]


def test_a_scan_stops_after_its_byte_budget(tmp_path: Path) -> None:
    scanner = procreader.BatchScanner(_setup(MasterKey.generate(), batch_bytes=10_000))
    for number in range(5):
        (tmp_path / f"f{number}").write_bytes(os.urandom(6_000))
    results, _ = scanner.scan(1, [_item(tmp_path / f"f{n}") for n in range(5)])
    assert [r.outcome for r in results] == [procreader.STORED, procreader.STORED]


def test_worker_processes_with_tiny_limits_round_trip(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procreader, "BATCH_FILES", 4)
    monkeypatch.setattr(procreader, "BATCH_BYTES", 3000)  # most scans are cut short
    monkeypatch.setattr(procreader, "MAX_FILE_SIZE", 5000)  # bigger files go to threads
    src = tmp_path / "src"
    make_awkward_tree(src)
    for number in range(30):
        (src / f"bulk-{number:02}.txt").write_bytes(os.urandom(100 * number))
    (src / "copy-of-bulk-29.txt").write_bytes((src / "bulk-29.txt").read_bytes())
    snap, summary = Archiver(repo, processes=2).run([str(src)])
    assert summary.files_missed == 0
    target = tmp_path / "restore"
    assert Restorer(repo, snap, target).run().warnings == []
    assert_trees_equal(src, target / src.relative_to("/"))
    _, again = Archiver(repo, BackupOptions(parent=snap), processes=2).run([str(src)])
    assert (again.files_new, again.files_changed, again.bytes_read) == (0, 0, 0)


class _KillAWorker(BackupProgress):
    def __init__(self) -> None:
        self.files = 0

    def file_done(self, path: bytes, state: str) -> None:
        self.files += 1
        if self.files == 3:
            for child in multiprocessing.active_children():
                if child.name.startswith("roost-scan-") and child.pid is not None:
                    os.kill(child.pid, signal.SIGKILL)


def test_a_killed_worker_fails_the_backup(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procreader, "BATCH_FILES", 2)
    src = tmp_path / "src"
    src.mkdir()
    for number in range(400):
        (src / f"f{number:03}").write_bytes(os.urandom(2000))
    with pytest.raises(BackupWorkerError, match="stopped"):
        Archiver(repo, progress=_KillAWorker(), processes=2).run([str(src)])
    assert repo.list_snapshots() == []

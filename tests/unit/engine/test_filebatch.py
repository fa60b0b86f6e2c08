"""Regular files scanned in batches (procreader.py, filebatch.py): outcomes, sealing, limits.

The scanner is exercised in this process for exact outcomes; the archiver then runs it in real
worker processes with tiny limits, so batches are cut short, files are handed back to the main
process (hardlinks, big files) and a killed worker fails the backup with its own error.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from tests.helpers.compare import assert_trees_equal
from tests.helpers.treegen import make_awkward_tree

from roost.engine import compress, fsmeta, procreader, scankeys, scanworker, workerproc
from roost.engine.archiver import Archiver, BackupOptions
from roost.engine.chunker import Chunker
from roost.engine.crypto import ChunkIds, MasterKey
from roost.engine.dirtask import DirTask, FileGroup
from roost.engine.filebatch import FileBatches
from roost.engine.filereader import CHANGED, FileReader
from roost.engine.filters import ExcludeRules
from roost.engine.heldblobs import HeldBlobs
from roost.engine.index import IndexFile
from roost.engine.keys import KdfParams
from roost.engine.pack import DATA_BLOB
from roost.engine.parenttree import ParentDir
from roost.engine.progress import BackupProgress
from roost.engine.repository import Repository
from roost.engine.restorer import Restorer
from roost.engine.snapshot import Snapshot
from roost.engine.tree import TREE_VERSION, Node, encode_entry, node_from_json
from roost.errors import BackupWorkerError, CorruptObject
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
    sizes = (64 * 1024, 256 * 1024, MIB)
    return procreader.WorkerSetup(master.id_key, master.chunker_seed, *sizes, **limits)  # type: ignore[arg-type]


def _items(*files: tuple[Path, scankeys.ParentKey] | Path) -> list[procreader.ScanGroup]:
    """One scan group per file: a path alone is read, a (path, parent key) pair compared
    first with a parent tree whose entry of the file has that key."""
    groups: list[procreader.ScanGroup] = []
    for file in files:
        path, key = file if isinstance(file, tuple) else (file, None)
        name = path.name.encode()
        tree = None if key is None else _tree(_doc(name, key))
        groups.append((bytes(path.parent) + b"/", tree, [name], frozenset()))
    return groups


def _doc(name: bytes, key: scankeys.ParentKey) -> dict[str, object]:
    """A regular file's tree document with the fields of ``key`` (None: left out)."""
    fields = {
        field: value
        for field, value in zip(scankeys.KEY_FIELDS, key, strict=True)
        if value is not None
    }
    return {"type": "file", "name": name.decode(), **fields}


def _tree(*docs: dict[str, object]) -> bytes:
    return orjson.dumps({"v": TREE_VERSION, "nodes": list(docs)})


def _scan(
    scanner: procreader.BatchScanner, batch: int, groups: list[procreader.ScanGroup]
) -> procreader.Scanned:
    """scanner.scan with each group's answer as one result per file (identical: IDENTICAL)."""
    answers, candidates, identical_bytes = scanner.scan(batch, groups)
    results: list[procreader.FileResult] = []
    for (_, _, names, _), answer in zip(groups, answers, strict=False):
        identical = [procreader.FileResult(procreader.IDENTICAL)] * len(names)
        results.extend(identical if isinstance(answer, int) else answer)
    return results, candidates, identical_bytes  # type: ignore[return-value]


def _key_of(path: Path) -> scankeys.ParentKey:
    """The first four fields (content unchanged), none of the others."""
    st = path.lstat()
    none = None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, *(none,) * 8  # type: ignore[return-value]


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


def test_a_file_result_survives_pickling_as_itself() -> None:
    node = Node(b"f", "file", size=3, content=[b"c" * 32])
    results = [
        procreader.FileResult(procreader.STORED, None, "changed while being read", 3, b"{}", 3),
        procreader.FileResult(procreader.UNCHANGED, node),
        procreader.FileResult(procreader.IDENTICAL),
    ]
    back = pickle.loads(pickle.dumps(results, protocol=5))
    assert back == results
    assert [type(result) for result in back] == [procreader.FileResult] * 3
    assert back[0].problem == "changed while being read" and back[1].node == node


def _entry_node(result: procreader.FileResult) -> Node:
    assert result.entry is not None
    return node_from_json(orjson.loads(result.entry))


def test_scan_outcomes(tmp_path: Path) -> None:
    master = MasterKey.generate()
    scanner = procreader.BatchScanner(_setup(master, larger_than=100_000, max_file_size=50_000))
    (tmp_path / "new.txt").write_bytes(b"hello world\n" * 10)
    (tmp_path / "same.txt").write_bytes(b"unchanged")
    (tmp_path / "big.bin").write_bytes(b"b" * 60_000)
    (tmp_path / "huge.bin").write_bytes(b"h" * 200_000)
    (tmp_path / "linked.txt").write_bytes(b"two names")
    os.link(tmp_path / "linked.txt", tmp_path / "second-name.txt")
    items = _items(
        tmp_path / "new.txt",
        (tmp_path / "same.txt", _key_of(tmp_path / "same.txt")),
        tmp_path / "big.bin",
        tmp_path / "huge.bin",
        tmp_path / "linked.txt",
        tmp_path / "gone.txt",
    )
    results, candidates, identical_bytes = _scan(scanner, 1, items)
    assert identical_bytes == 0
    assert [r.outcome for r in results] == [
        procreader.STORED,
        procreader.UNCHANGED,
        procreader.MAIN,  # above max_file_size: read by the main process's threads
        procreader.EXCLUDED,  # above the --exclude-larger-than limit
        procreader.MAIN,  # hardlinked: the main process reads each inode once
        procreader.MISSED,
    ]
    assert results[5].problem == "vanished during backup"
    assert (results[0].node, results[0].size, results[0].bytes_read) == (None, 120, 120)
    stored = _entry_node(results[0])
    assert stored.name == b"new.txt" and stored.size == 120
    key = ChunkIds(master.id_key)
    assert candidates == [(DATA_BLOB, key.chunk_id(b"hello world\n" * 10), 120)]
    assert results[1].node is not None and results[1].node.content == []  # caller fills it


def test_a_scanned_node_and_key_are_exactly_what_fsmeta_makes_of_the_lstat(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"content")
    os.chmod(path, 0o4751)
    os.utime(path, ns=(1_000_000_123, 2_000_000_456))
    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    results, _, _ = _scan(scanner, 1, _items(path))
    expected = fsmeta.node_from_stat(b"f.txt", os.lstat(path), bytes(path), read_xattrs=False)
    expected.xattrs = fsmeta.xattrs_of(bytes(path))
    expected.content = [ChunkIds(scanner.setup.id_key).chunk_id(b"content")]
    assert results[0].entry == encode_entry(expected)
    full_key = scankeys.stat_key(expected)
    again, _, identical_bytes = scanner.scan(2, _items((path, full_key)))
    assert (again, identical_bytes) == ([1], 7)  # identical: the parent tree's entry count


def test_a_listed_file_that_is_no_longer_regular_is_handed_back_unopened_or_unread(
    tmp_path: Path,
) -> None:
    """A new file is opened before it is looked at (O_NOFOLLOW, O_NONBLOCK): whatever took
    its place since the walk listed it goes back to the main process, without blocking."""
    (tmp_path / "target").write_bytes(b"target")
    os.symlink(tmp_path / "target", tmp_path / "now-a-symlink")
    os.mkfifo(tmp_path / "now-a-fifo")  # no writer: a blocking open would hang here
    (tmp_path / "now-a-directory").mkdir()
    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    names = ("now-a-symlink", "now-a-fifo", "now-a-directory")
    results, candidates, _ = _scan(scanner, 1, _items(*(tmp_path / name for name in names)))
    assert [r.outcome for r in results] == [procreader.MAIN] * 3
    assert candidates == []


def test_xattrs_of_a_new_file_are_read_through_its_descriptor_as_by_path(tmp_path: Path) -> None:
    path = tmp_path / "tagged"
    path.write_bytes(b"tagged content")
    try:
        os.setxattr(path, b"user.roost.a", b"first")
        os.setxattr(path, b"user.roost.b", b"")
    except OSError as exc:
        pytest.skip(f"user xattrs are not supported under {tmp_path}: {exc.strerror}")
    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    results, _, _ = _scan(scanner, 1, _items(path))
    expected = [(b"user.roost.a", b"first"), (b"user.roost.b", b"")]
    assert fsmeta.xattrs_of(bytes(path)) == expected
    assert _entry_node(results[0]).xattrs == expected


@pytest.mark.parametrize("eager", [True, False])
def test_a_file_that_changes_after_its_lstat_is_read_and_reported_changed(
    tmp_path: Path, eager: bool
) -> None:
    path = tmp_path / "growing.log"
    path.write_bytes(b"first line\n")
    known = os.lstat(path)
    with path.open("ab") as log:
        log.write(b"second line\n")
    master = MasterKey.generate()
    chunker = Chunker(64 * 1024, 256 * 1024, MIB, master.chunker_seed)
    sink = HeldBlobs(ChunkIds(master.id_key), eager)  # the worker's sink
    node = Node(b"growing.log", "file", size=known.st_size)
    stored, problem = FileReader(sink, chunker, lambda _: None).read(bytes(path), node, known)
    assert (stored, problem) == (True, CHANGED)


def test_seal_puts_the_wanted_blobs_end_to_end(tmp_path: Path) -> None:
    master = MasterKey.generate()
    scanner = procreader.BatchScanner(_setup(master))
    for name, text in (("a", b"alpha " * 50), ("b", b"beta " * 70), ("c", b"gamma " * 90)):
        (tmp_path / name).write_bytes(text)
    _, candidates, _ = _scan(scanner, 7, _items(*(tmp_path / n for n in "abc")))
    wanted = [candidates[2][1], candidates[0][1]]  # the main process wants two, in its order
    [(segment, entries, last)] = scanner.seal(7, wanted)
    assert last
    offset = 0
    plain = []
    for _, blob_id, length, raw_length, method in entries:
        payload = bytes(segment[offset : offset + length])
        plain.append(compress.decompress(method, payload, raw_length))
        assert ChunkIds(master.id_key).chunk_id(plain[-1]) == blob_id
        offset += length
    assert offset == len(segment)
    assert plain == [b"gamma " * 90, b"alpha " * 50]
    assert [e[4] for e in entries] == [compress.ZSTD_COMPACT] * 2


def test_a_scan_stops_after_its_byte_budget(tmp_path: Path) -> None:
    scanner = procreader.BatchScanner(_setup(MasterKey.generate(), batch_bytes=10_000))
    for number in range(5):
        (tmp_path / f"f{number}").write_bytes(os.urandom(6_000))
    results, _, _ = _scan(scanner, 1, _items(*(tmp_path / f"f{n}" for n in range(5))))
    assert [r.outcome for r in results] == [procreader.STORED, procreader.STORED]


def _directory_of_three(tmp_path: Path) -> tuple[bytes, bytes]:
    """A directory with files a, b and c, and a parent tree of it that has them unchanged
    and a subdirectory: (the directory's path with "/", the tree)."""
    docs = []
    for name, size in (("a", 10), ("b", 20), ("c", 30)):
        (tmp_path / name).write_bytes(b"x" * size)
        docs.append(_doc(name.encode(), scankeys.lstat_key(os.lstat(tmp_path / name))))
    docs.append({"type": "dir", "name": "sub", "subtree": "00" * 32})
    return bytes(tmp_path) + b"/", _tree(*docs)


def test_a_group_of_identical_files_is_answered_by_the_parent_tree_entry_count(
    tmp_path: Path,
) -> None:
    directory, tree = _directory_of_three(tmp_path)
    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    group = (directory, tree, [b"a", b"b", b"c"], frozenset[bytes]())
    assert scanner.scan(1, [group]) == ([4], [], 60)
    in_two = [(directory, tree, [b"a"], frozenset[bytes]()), (directory, tree, [b"b"], frozenset())]
    assert scanner.scan(2, in_two) == ([4, 4], [], 30)  # each group alike


def test_files_of_a_big_directory_are_compared_with_keys_sent_for_each(tmp_path: Path) -> None:
    """A directory of more files than a batch takes comes in several groups: the main
    process sends each file's key rather than the whole tree with each group."""
    directory, _ = _directory_of_three(tmp_path)
    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    keys = [scankeys.lstat_key(os.lstat(tmp_path / "a")), None]  # None: read it
    [answer], candidates, identical_bytes = scanner.scan(
        1, [(directory, keys, [b"a", b"b"], frozenset())]
    )
    assert [r.outcome for r in answer] == [procreader.IDENTICAL, procreader.STORED]  # type: ignore[union-attr]
    assert (len(candidates), identical_bytes) == (1, 10)


def test_a_group_with_a_changed_or_forced_file_is_answered_file_by_file(
    tmp_path: Path,
) -> None:
    directory, tree = _directory_of_three(tmp_path)
    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    with (tmp_path / "c").open("ab") as grown:
        grown.write(b"more")
    [answer], candidates, identical_bytes = scanner.scan(
        1, [(directory, tree, [b"a", b"b", b"c"], frozenset())]
    )
    assert isinstance(answer, list) and len(candidates) == 1
    assert [r.outcome for r in answer] == [procreader.IDENTICAL] * 2 + [procreader.STORED]
    assert (answer[2].size, identical_bytes) == (34, 30)
    forced = (directory, tree, [b"a", b"b"], frozenset({b"b"}))  # missed last time: read
    [answer], _, identical_bytes = scanner.scan(2, [forced])
    assert [r.outcome for r in answer] == [procreader.IDENTICAL, procreader.STORED]  # type: ignore[union-attr]
    assert identical_bytes == 10


def test_files_of_an_unusable_parent_tree_are_all_read(tmp_path: Path) -> None:
    directory, _ = _directory_of_three(tmp_path)
    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    for tree in (b"not json", orjson.dumps({"v": TREE_VERSION + 1, "nodes": []})):
        [answer], _, identical_bytes = scanner.scan(
            1, [(directory, tree, [b"a", b"b"], frozenset())]
        )
        assert [r.outcome for r in answer] == [procreader.STORED] * 2  # type: ignore[union-attr]
        assert identical_bytes == 0


def test_a_scan_stops_inside_a_group_after_its_byte_budget(tmp_path: Path) -> None:
    scanner = procreader.BatchScanner(_setup(MasterKey.generate(), batch_bytes=10_000))
    for number in range(3):
        (tmp_path / f"f{number}").write_bytes(os.urandom(6_000))
    names = [b"f0", b"f1", b"f2"]
    groups = [(bytes(tmp_path) + b"/", None, names, frozenset[bytes]())] * 2
    [answer], _, _ = scanner.scan(1, groups)  # the second group is not reached
    assert [r.outcome for r in answer] == [procreader.STORED] * 2  # type: ignore[union-attr]


def test_a_batch_takes_whole_groups_and_splits_only_a_big_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(procreader, "BATCH_FILES", 4)
    monkeypatch.setattr(procreader, "WHOLE_GROUP_FILES", 6)
    batches = FileBatches(
        _setup(MasterKey.generate()),
        0,
        ThreadPoolExecutor(1),
        None,
        lambda *_: None,  # type: ignore[arg-type]
    )
    tasks = {}
    for name, count in (("small", 3), ("whole", 5), ("big", 9)):
        task = tasks[name] = DirTask(Node(name.encode(), "dir"))
        task.big = count > procreader.WHOLE_GROUP_FILES
        batches._queued.append(FileGroup(task, [b"f%d" % n for n in range(count)]))
    names = {id(task): name for name, task in tasks.items()}
    taken = [[(names[id(g.task)], len(g.names)) for g in batches._take_batch()] for _ in range(5)]
    assert taken == [
        [("small", 3)],  # "whole" does not fit in the rest of this batch: the next
        [("whole", 5)],  # alone, bigger than a batch: its tree travels once
        [("big", 4)],  # a big directory's files fill batches
        [("big", 4)],
        [("big", 1)],
    ]
    assert tasks["big"].waiting == 2  # a group more for each split


def test_worker_processes_with_tiny_limits_round_trip(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procreader, "BATCH_FILES", 4)
    monkeypatch.setattr(procreader, "WHOLE_GROUP_FILES", 6)  # bigger: split, with keys
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


def _tree_of_groups(src: Path) -> int:
    """A directory of ten files (split over batches of four), a leaf directory of three and
    a directory with both files and a subdirectory; the number of files."""
    for number in range(10):
        (src / "big").mkdir(parents=True, exist_ok=True)
        (src / "big" / f"f{number:02}").write_bytes(os.urandom(100 + number))
    (src / "leaf").mkdir()
    for name in "abc":
        (src / "leaf" / name).write_bytes(name.encode() * 50)
    (src / "mixed" / "sub").mkdir(parents=True)
    (src / "mixed" / "sub" / "deep").write_bytes(b"deep")
    (src / "mixed" / "top").write_bytes(b"top")
    return 15


def test_identical_groups_reuse_the_parent_trees_and_changes_make_new_ones(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procreader, "BATCH_FILES", 4)
    monkeypatch.setattr(procreader, "WHOLE_GROUP_FILES", 6)  # bigger: split, with keys
    src = tmp_path / "src"
    files = _tree_of_groups(src)
    first, _ = Archiver(repo, processes=2).run([str(src)])
    # the first backup's reads may have moved access times (relatime): settled now
    second, _ = Archiver(repo, BackupOptions(parent=first), processes=2).run([str(src)])
    same, summary = Archiver(repo, BackupOptions(parent=second), processes=2).run([str(src)])
    assert (summary.files_unchanged, summary.bytes_read) == (files, 0)
    assert same.tree == second.tree  # every directory's tree blob reused as it was
    (src / "big" / "f03").write_bytes(b"changed")
    (src / "big" / "f07").unlink()
    (src / "big" / "new").write_bytes(b"new")
    (src / "leaf" / "c").unlink()  # the others identical: the parent's tree has one more
    third, counts = _incremental(repo, same, src)
    assert counts == (files - 3, 1, 1)
    old, new = (_entries(repo, snap, src / "big") for snap in (same, third))
    assert sorted(new) == sorted(set(old) - {b"f07"} | {b"new"})
    assert all(
        encode_entry(new[name]) == encode_entry(old[name])
        for name in new
        if name not in (b"f03", b"new")
    )
    assert set(_entries(repo, third, src / "leaf")) == {b"a", b"b"}
    _assert_restores_exactly(repo, third, src, tmp_path)


def test_a_directory_of_more_files_than_go_whole_round_trips_at_the_real_limits(
    tmp_path: Path, repo: Repository
) -> None:
    src = tmp_path / "src"
    (src / "flat").mkdir(parents=True)
    count = procreader.WHOLE_GROUP_FILES + 77  # split over batches, compared with keys
    for number in range(count):
        (src / "flat" / f"{number:05}").write_bytes(b"%d" % number)
    first, _ = Archiver(repo, processes=2).run([str(src)])
    second, _ = Archiver(repo, BackupOptions(parent=first), processes=2).run([str(src)])
    (src / "flat" / "00500").write_bytes(b"changed")
    (src / "flat" / "01090").unlink()
    third, counts = _incremental(repo, second, src)
    assert counts == (count - 2, 1, 0)
    old, new = (_entries(repo, snap, src / "flat") for snap in (second, third))
    assert set(old) - set(new) == {b"01090"} and len(new) == count - 1
    assert new[b"00500"].size == 7 and new[b"00499"] == old[b"00499"]
    _assert_restores_exactly(repo, third, src, tmp_path)


def _incremental(
    repo: Repository, parent: Snapshot, src: Path
) -> tuple[Snapshot, tuple[int, int, int]]:
    """Back up ``src`` on ``parent``: the snapshot, and files (unchanged, changed, new)."""
    snap, summary = Archiver(repo, BackupOptions(parent=parent), processes=2).run([str(src)])
    return snap, (summary.files_unchanged, summary.files_changed, summary.files_new)


def _assert_restores_exactly(repo: Repository, snap: Snapshot, src: Path, tmp_path: Path) -> None:
    target = tmp_path / "restore"
    Restorer(repo, snap, target, processes=0).run()
    assert_trees_equal(src, target / src.relative_to("/"))


def test_an_unreadable_parent_tree_only_costs_reading_its_files_again(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    files = _tree_of_groups(src)
    first, _ = Archiver(repo, processes=2).run([str(src)])
    second, _ = Archiver(repo, BackupOptions(parent=first), processes=2).run([str(src)])
    damaged = {_subtree(repo, second, src / name) for name in ("leaf", "big")}
    read_blob = repo.read_blob

    def damaged_read(blob_id: bytes) -> bytes:
        if blob_id in damaged:
            raise CorruptObject("a tree blob failed authentication (damaged or tampered)")
        return read_blob(blob_id)

    monkeypatch.setattr(repo, "read_blob", damaged_read)
    third, counts = _incremental(repo, second, src)
    assert counts == (files - 13, 0, 13)  # leaf's 3 and big's 10 files: read as new
    monkeypatch.undo()
    for name in ("leaf", "big", "mixed"):
        assert _entries(repo, third, src / name) == _entries(repo, second, src / name)
    _assert_restores_exactly(repo, third, src, tmp_path)


def _subtree(repo: Repository, snap: Snapshot, path: Path) -> bytes:
    nodes = _entries(repo, snap, path.parent)
    subtree = nodes[path.name.encode()].subtree
    assert subtree is not None
    return subtree


def test_an_incremental_leaves_out_files_excluded_since_and_reads_forced_ones(
    tmp_path: Path, repo: Repository
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, size in (("a.txt", 10), ("b.log", 20), ("c.txt", 3000)):
        (src / name).write_bytes(b"x" * size)
    first, _ = Archiver(repo, processes=2).run([str(src)])
    rules = ExcludeRules(["*.log"], larger_than=1000)
    options = BackupOptions(rules=rules, parent=first, force_read=frozenset({bytes(src / "a.txt")}))
    second, summary = Archiver(repo, options, processes=2).run([str(src)])
    assert (summary.files_unchanged, summary.files_changed, summary.bytes_read) == (0, 1, 10)
    assert set(_entries(repo, second, src)) == {b"a.txt"}  # b.log and c.txt: excluded now
    third, summary = Archiver(repo, BackupOptions(parent=first), processes=2).run([str(src)])
    assert (summary.files_unchanged, summary.bytes_read) == (3, 0)
    assert set(_entries(repo, third, src)) == {b"a.txt", b"b.log", b"c.txt"}


def test_the_scan_workers_are_gone_before_the_last_index_is_written(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their memory is not added to the end of the backup (final packs, index, snapshot)."""
    started: list[scanworker.WorkerProcess] = []
    start = scanworker.start_worker

    def recording_start(setup: procreader.WorkerSetup, name: str) -> scanworker.WorkerProcess:
        started.append(start(setup, name))
        return started[-1]

    running_at_index: list[list[int | None]] = []
    write_index_file = repo.write_index_file

    def recording_write(index_file: IndexFile) -> str:
        running_at_index.append([worker.exitcode for worker in started])
        return write_index_file(index_file)

    monkeypatch.setattr(scanworker, "start_worker", recording_start)
    monkeypatch.setattr(repo, "write_index_file", recording_write)
    src = tmp_path / "src"
    src.mkdir()
    for number in range(300):
        (src / f"f{number:03}").write_bytes(os.urandom(2000))
    _, summary = Archiver(repo, processes=2).run([str(src)])
    assert summary.files_new == 300
    assert len(started) == 2
    assert running_at_index[-1] == [0, 0]  # both exited, cleanly


class _FileCount(BackupProgress):
    def __init__(self) -> None:
        self.one_by_one = self.in_batches = 0

    def file_done(self, path: bytes, state: str) -> None:
        self.one_by_one += 1

    def files_done(self, count: int) -> None:
        self.in_batches += count


def test_every_file_is_counted_once_by_progress_one_by_one_or_in_batches(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procreader, "MAX_FILE_SIZE", 5000)  # bigger files: read here
    src = tmp_path / "src"
    src.mkdir()
    for number in range(40):
        (src / f"f{number:02}").write_bytes(os.urandom(200 * number))  # 25 big, 15 small
    os.link(src / "f01", src / "link-to-f01")  # hardlinked: read here
    snap: Snapshot | None = None
    for incremental, processes in ((False, 2), (False, 0), (True, 2)):
        counted = _FileCount()
        options = BackupOptions(parent=snap if incremental else None)
        snap, summary = Archiver(repo, options, counted, processes=processes).run([str(src)])
        total = summary.files_new + summary.files_changed + summary.files_unchanged
        assert total == 41
        assert counted.one_by_one + counted.in_batches == 41
        assert counted.in_batches >= 14  # the small files, answered by the scanners


def test_when_no_worker_process_can_start_the_scanners_run_on_threads(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(module: str) -> object:
        raise PermissionError(13, "Permission denied", "/usr/bin/python3")

    monkeypatch.setattr(workerproc, "_start", refuse)
    monkeypatch.setattr(procreader, "BATCH_FILES", 4)
    _files_round_trip(tmp_path, repo, 40, Archiver(repo, processes=2))


def _files_round_trip(tmp_path: Path, repo: Repository, count: int, archiver: Archiver) -> None:
    """Back up ``count`` small distinct files with ``archiver``; restore; compare."""
    src = tmp_path / "src"
    src.mkdir()
    for number in range(count):
        (src / f"f{number:03}").write_bytes(os.urandom(200 + number))
    snap, summary = archiver.run([str(src)])
    assert (summary.files_new, summary.files_missed) == (count, 0)
    _assert_restores_exactly(repo, snap, src, tmp_path)


def test_scanners_on_several_threads_round_trip(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a seal answered on another pool thread before its scan's answer was fully applied
    # once lost the batch (KeyError)
    monkeypatch.setattr(procreader, "BATCH_FILES", 2)
    monkeypatch.setattr(procreader, "WHOLE_GROUP_FILES", 3)
    _files_round_trip(tmp_path, repo, 300, Archiver(repo, processes=0, readers=4))


class _KillAWorker(BackupProgress):
    def __init__(self) -> None:
        self.files = 0

    def file_done(self, path: bytes, state: str) -> None:
        self.files_done(1)

    def files_done(self, count: int) -> None:
        before, self.files = self.files, self.files + count
        if before < 3 <= self.files:
            for pid in _worker_pids():
                os.kill(pid, signal.SIGKILL)


def _worker_pids() -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
            cmdline = (status.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(fields.get("PPid", "0")) == os.getpid() and b"run_worker" in cmdline:
            found.append(int(status.parent.name))
    return found


def test_a_killed_worker_fails_the_backup(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procreader, "BATCH_FILES", 2)
    monkeypatch.setattr(procreader, "WHOLE_GROUP_FILES", 3)
    src = tmp_path / "src"
    src.mkdir()
    for number in range(400):
        (src / f"f{number:03}").write_bytes(os.urandom(2000))
    with pytest.raises(BackupWorkerError, match="stopped"):
        Archiver(repo, progress=_KillAWorker(), processes=2).run([str(src)])
    assert _worker_pids() == []  # the other worker was stopped too
    assert repo.list_snapshots() == []


def test_parent_entries_are_decoded_on_demand() -> None:
    docs = [
        {"type": "file", "name": "plain", "size": 5, "mtime_ns": 7, "inode": 9, "user": "root"},
        {"type": "file", "name_b64": "/w==", "size": "five"},  # b"\xff", malformed size
        {"type": "dir", "name": "sub", "subtree": "00" * 32},
    ]
    parent = ParentDir(b"t" * 32, docs)
    assert len(parent) == 3 and b"\xff" in parent
    none = None
    assert parent.key(b"plain") == (5, 7, none, 9, none, none, none, "root", none, none, none, none)
    assert parent.key(b"\xff") == ("five", *(none,) * 11)  # never equals an lstat: read again
    assert parent.key(b"sub") is None  # only regular files are compared by key
    assert parent.node(b"\xff") is None  # malformed: the file is simply read again
    node = parent.node(b"sub")
    assert node is not None and node.subtree == bytes(32)
    assert set(parent.nodes()) == {b"plain", b"sub"}


def test_an_access_time_change_keeps_the_content_and_records_the_new_time(
    tmp_path: Path, repo: Repository
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    two_days_ago = time.time_ns() - 2 * 86400 * 10**9
    for name in ("a.txt", "b.txt"):
        (src / name).write_bytes(name.encode() * 1000)
        os.utime(src / name, ns=(two_days_ago, two_days_ago))
    first, _ = Archiver(repo, processes=2).run([str(src)])
    (src / "a.txt").read_bytes()  # a reader updates the access time, not the ctime
    atime = (src / "a.txt").stat().st_atime_ns
    if atime == two_days_ago:
        pytest.skip("this file system does not update access times (noatime)")
    second, summary = Archiver(repo, BackupOptions(parent=first), processes=2).run([str(src)])
    assert (summary.files_unchanged, summary.bytes_read) == (2, 0)
    old, new = (_entries(repo, snap, src) for snap in (first, second))
    assert new[b"a.txt"].atime_ns == atime
    assert new[b"a.txt"].content == old[b"a.txt"].content
    assert new[b"b.txt"] == old[b"b.txt"]


def test_a_directory_reencoded_for_one_changed_entry_keeps_the_others_byte_for_byte(
    tmp_path: Path, repo: Repository
) -> None:
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    for name in ("a.txt", "b\xff.bin", "c.txt"):
        (src / os.fsdecode(name.encode("latin-1"))).write_bytes(name.encode() * 300)
    first, _ = Archiver(repo, processes=2).run([str(src)])
    inner = os.lstat(src / "inner")
    os.utime(src / "inner", ns=(inner.st_atime_ns - 10**9, inner.st_mtime_ns))  # atime only
    second, summary = Archiver(repo, BackupOptions(parent=first), processes=2).run([str(src)])
    assert (summary.files_unchanged, summary.bytes_read) == (3, 0)
    old, new = (_entries(repo, snap, src) for snap in (first, second))
    assert new[b"inner"].atime_ns == inner.st_atime_ns - 10**9  # the directory was re-encoded
    files = [name for name in old if name != b"inner"]
    assert [encode_entry(new[name]) for name in files] == [
        encode_entry(old[name]) for name in files
    ]
    target = tmp_path / "restore"
    Restorer(repo, second, target, processes=0).run()
    assert_trees_equal(src, target / src.relative_to("/"))


def _entries(repo: Repository, snap: Snapshot, src: Path) -> dict[bytes, Node]:
    nodes = repo.load_tree(snap.tree)
    for part in src.parts[1:]:
        subtree = next(n.subtree for n in nodes if n.name == part.encode())
        assert subtree is not None
        nodes = repo.load_tree(subtree)
    return {node.name: node for node in nodes}


def test_hardlinks_in_a_changed_directory_are_counted_once(
    tmp_path: Path, repo: Repository
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"shared content")
    os.link(src / "a.txt", src / "b.txt")
    (src / "c.txt").write_bytes(b"before")
    first, _ = Archiver(repo, processes=2).run([str(src)])
    (src / "c.txt").write_bytes(b"after!")  # same number of entries, one changed
    _, summary = Archiver(repo, BackupOptions(parent=first), processes=2).run([str(src)])
    assert (summary.files_unchanged, summary.files_changed, summary.files_new) == (2, 1, 0)


class _Queue:
    """A worker's channel as a list of requests (only ``recv`` is used)."""

    def __init__(self, *messages: tuple[object, ...], idle_polls: int = 0) -> None:
        self.messages = list(messages)
        self.idle_polls = idle_polls  # polls that find nothing waiting yet

    def recv(self) -> tuple[object, ...]:
        return self.messages.pop(0)

    def poll(self) -> bool:
        self.idle_polls -= 1
        return self.idle_polls < 0 and bool(self.messages)


def _answer_order(scanner: procreader.BatchScanner, *messages: tuple[object, ...]) -> list[object]:
    """The requests a worker answers, in its order, given ``messages`` and then stop."""
    from collections import deque

    conn = _Queue(*messages, ("stop",))
    deferred: deque[tuple[object, ...]] = deque()
    order = []
    while (message := scanworker._next_request(conn, scanner, deferred))[0] != "stop":  # type: ignore[arg-type]
        order.append(message[:2])
        list(scanworker.handle(scanner, message))
    assert not deferred
    return order


def test_a_worker_seals_a_big_held_batch_before_scanning_the_next(tmp_path: Path) -> None:

    scanner = procreader.BatchScanner(_setup(MasterKey.generate(), batch_bytes=8 * MIB))
    (tmp_path / "a").write_bytes(os.urandom(procreader.SEAL_FIRST))  # stays as big compressed
    _, candidates, _ = _scan(scanner, 1, _items(tmp_path / "a"))
    assert scanner.holds_batch() and scanner.seals_first()
    scan_2 = ("scan", 2, _items(tmp_path / "a"))
    seal_1 = ("seal", 1, [c[1] for c in candidates])
    order = _answer_order(scanner, scan_2, seal_1)
    assert order == [("seal", 1), ("scan", 2)]


def test_a_worker_holding_a_small_batch_scans_the_next_without_waiting(tmp_path: Path) -> None:
    """A batch of small files is held while the next is scanned: waiting for every seal cost
    a round trip per batch, a third more time on a million ~1 KiB files."""

    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    (tmp_path / "a").write_bytes(b"held plaintext " * 100)
    (tmp_path / "b").write_bytes(b"next batch " * 100)
    _, candidates, _ = _scan(scanner, 1, _items(tmp_path / "a"))
    assert scanner.holds_batch() and not scanner.seals_first()
    scan_2 = ("scan", 2, _items(tmp_path / "b"))
    seal_1 = ("seal", 1, [candidates[0][1]])
    order = _answer_order(scanner, scan_2, seal_1)
    assert order == [("scan", 2), ("seal", 1)]
    assert scanner.holds_batch()  # batch 2, whose seal was not sent here


def test_a_seal_comes_in_parts_and_a_big_one_is_given_back_after_it_is_sent(
    tmp_path: Path,
) -> None:
    master = MasterKey.generate()
    sizes = (4 * MIB, 8 * MIB, 16 * MIB)  # files up to 4 MiB are one blob each
    scanner = procreader.BatchScanner(
        procreader.WorkerSetup(master.id_key, master.chunker_seed, *sizes, batch_bytes=16 * MIB)
    )
    blobs = {"a": os.urandom(3 * MIB), "b": os.urandom(200_000), "c": os.urandom(300_000)}
    for name, data in blobs.items():  # incompressible: stored raw
        (tmp_path / name).write_bytes(data)
    _, candidates, _ = _scan(scanner, 1, _items(*(tmp_path / name for name in blobs)))
    parts = [
        (bytes(segment), entries, last)
        for segment, entries, last in scanner.seal(1, [c[1] for c in candidates])
    ]
    # a part holds at most SEGMENT_PART bytes, unless one blob alone is bigger
    assert [(len(seg), len(entries), last) for seg, entries, last in parts] == [
        (3 * MIB, 1, False),
        (500_000, 2, True),
    ]
    assert procreader.SEGMENT_PART == 512 * 1024
    assert b"".join(seg for seg, _, _ in parts) == blobs["a"] + blobs["b"] + blobs["c"]
    assert [(e[2], e[3], e[4]) for _, entries, _ in parts for e in entries] == [
        (len(data), len(data), compress.RAW) for data in blobs.values()
    ]
    scanner.release_segment()
    buffer = scanner._segments.get(0)
    assert buffer[procreader.KEEP_SEGMENT : procreader.KEEP_SEGMENT + 4096] == bytes(4096)
    assert buffer[:64] == blobs["b"][:64]  # the kept part is untouched


def test_a_worker_compresses_its_held_blobs_while_it_waits_for_their_seal(
    tmp_path: Path,
) -> None:
    from collections import deque

    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    _want_nothing(scanner, tmp_path)  # the scanner now holds plaintext until its seal
    texts = {f"f{n}": f"line {n}\n".encode() * (500 + n) for n in range(3)}
    for name, text in texts.items():
        (tmp_path / name).write_bytes(text)
    _, candidates, _ = _scan(scanner, 1, _items(*(tmp_path / name for name in texts)))
    held = scanner._held[1]
    assert {h.method for h in held.values()} == {None}  # plaintext, as scanned
    seal = ("seal", 1, [candidates[2][1], candidates[0][1]])
    conn = _Queue(seal, idle_polls=10)  # the seal arrives after a while
    assert scanworker._next_request(conn, scanner, deque()) == seal  # type: ignore[arg-type]
    assert {h.method for h in held.values()} == {compress.ZSTD_COMPACT}  # done meanwhile
    [(segment, entries, last)] = scanner.seal(1, seal[2])
    offset, plain = 0, []
    for _, _, length, raw_length, method in entries:
        plain.append(
            compress.decompress(method, bytes(segment[offset : offset + length]), raw_length)
        )
        offset += length
    assert last and plain == [texts["f2"], texts["f0"]]
    assert not scanner.holds_batch() and not scanner.compress_ahead()


def _want_nothing(scanner: procreader.BatchScanner, tmp_path: Path) -> None:
    """Scan a file whose seal wants none of its blobs (as if stored already)."""
    (tmp_path / "stored-already").write_bytes(b"known text " * 300)
    scanner.scan(99, _items(tmp_path / "stored-already"))
    assert list(scanner.seal(99, [])) == [(memoryview(b""), [], True)]


def _held_methods(scanner: procreader.BatchScanner, batch: int, path: Path) -> set[int | None]:
    scanner.scan(batch, _items(path))
    return {held.method for held in scanner._held[batch].values()}


def test_blobs_are_compressed_as_found_while_the_seals_want_most_of_them(
    tmp_path: Path,
) -> None:
    """A backup of new data holds its batches compressed, a backup of data stored already
    (little of what it finds is wanted) holds plaintext and compresses only what is wanted."""
    scanner = procreader.BatchScanner(_setup(MasterKey.generate()))
    text = tmp_path / "text"
    text.write_bytes(b"compressible text " * 2000)
    assert _held_methods(scanner, 1, text) == {compress.ZSTD_COMPACT}  # eager at first
    list(scanner.seal(1, list(scanner._held[1])))  # all wanted: stays eager
    _want_nothing(scanner, tmp_path)  # the recent wanted share falls to 1/2
    assert _held_methods(scanner, 2, text) == {None}  # plaintext, for its seal to compress
    [(segment, [entry], last)] = scanner.seal(2, list(scanner._held[2]))
    assert last
    assert compress.decompress(entry[4], bytes(segment), entry[3]) == text.read_bytes()
    assert _held_methods(scanner, 3, text) == {compress.ZSTD_COMPACT}  # back above 3/4

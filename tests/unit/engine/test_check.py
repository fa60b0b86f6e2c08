"""Tests for roost.engine.check against a real local repository and a real backup.

One backup of a generated tree is made per module; every test works on its own copy of that
repository, damages it in one precise way and asserts exactly what check reports.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from roost.engine.archiver import Archiver
from roost.engine.check import WORKERS, CheckIssue, CheckReport, check_repository
from roost.engine.keys import KdfParams
from roost.engine.pack import DATA_BLOB, TREE_BLOB, pack_key
from roost.engine.recovery import rebuild_index
from roost.engine.repository import Repository
from roost.engine.restorer import Restorer
from roost.engine.snapshot import Snapshot
from roost.engine.tree import Node
from roost.engine.uploader import BlobSaver
from roost.errors import StorageError
from roost.storage.faulty import FaultyBackend
from roost.storage.local import LocalBackend

KDF = KdfParams(memory_kib=64, iterations=1, lanes=1)
PACK_SIZE = 64 * 1024
MIB = 1024 * 1024
AUTH_FAILED = "failed authentication (damaged or tampered)"

# relative path -> size of random content (text files are generated separately)
RANDOM_FILES = {
    **{f"small/r{i:02d}.bin": 1000 + i * 900 for i in range(80)},
    "big/a.bin": 6 * MIB + 12_345,
    "big/b.bin": 2 * MIB + 777,
    "big/nested/deeper/c.bin": 1 * MIB + 300_000,
}
TEXT_FILES = {f"text/t{i:02d}.txt": 200 + i * 1500 for i in range(20)}
COPIES = {"dup/a_copy.bin": "big/a.bin"}  # same content: its chunks are shared


def make_source(root: Path) -> None:
    for rel, size in RANDOM_FILES.items():
        _write(root / rel, os.urandom(size))
    for number, (rel, size) in enumerate(TEXT_FILES.items()):
        line = f"file {number}: the quick brown fox jumps over the lazy dog\n".encode()
        _write(root / rel, (line * (size // len(line) + 1))[:size])
    for rel, original in COPIES.items():
        _write(root / rel, (root / original).read_bytes())
    _write(root / "empty.txt", b"")
    (root / "empty_dir").mkdir()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@dataclass
class Pristine:
    src: Path
    repo_dir: Path
    snapshot_id: str


@dataclass
class Env:
    repo: Repository
    root: Path  # the repository directory
    src: Path
    snap: Snapshot
    tmp: Path

    def files_by_blob(self) -> dict[bytes, set[str]]:
        """Oracle: data blob id -> absolute paths of the files using it (plain recursion)."""
        found: dict[bytes, set[str]] = defaultdict(set)

        def visit(tree_id: bytes, prefix: str) -> None:
            for node in self.repo.load_tree(tree_id):
                path = f"{prefix}/{os.fsdecode(node.name)}"
                if node.subtree is not None:
                    visit(node.subtree, path)
                for chunk in node.content:
                    found[chunk].add(path)

        visit(self.snap.tree, "")
        return found

    def content(self, rel: str) -> list[bytes]:
        return self.node(rel).content

    def node(self, rel: str) -> Node:
        """The snapshot's entry for ``src/rel``, found by walking down from the root."""
        tree: bytes | None = self.snap.tree
        found = Node(name=b"", type="dir")
        for part in str(self.src / rel).strip("/").split("/"):
            assert tree is not None
            [found] = [n for n in self.repo.load_tree(tree) if n.name == part.encode()]
            tree = found.subtree
        return found

    def pack_file(self, blob_id: bytes) -> tuple[str, Path]:
        loc = self.repo.index.find(blob_id)
        assert loc is not None
        key = pack_key(loc.pack)
        return key, self.root / key

    def affected(self, *rels: str) -> list[str]:
        return sorted(f"snapshot {self.snap.short_id}: {self.src / rel}" for rel in rels)

    def affected_by(self, blob_ids: set[bytes]) -> list[str]:
        users = self.files_by_blob()
        paths = {path for blob_id in blob_ids for path in users.get(blob_id, ())}
        return sorted(f"snapshot {self.snap.short_id}: {path}" for path in paths)

    def pack_count(self) -> int:
        return len(pack_names(self))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    base = tmp_path_factory.mktemp("check")
    src = base / "src"
    make_source(src)
    repo, _ = Repository.init(LocalBackend(base / "repo"), "pw", kdf=KDF, pack_size=PACK_SIZE)
    snap, _ = Archiver(repo).run([str(src)])
    return Pristine(src, base / "repo", snap.id)


@pytest.fixture
def env(pristine: Pristine, tmp_path: Path) -> Env:
    root = tmp_path / "repo"
    shutil.copytree(pristine.repo_dir, root)
    repo = Repository.open(LocalBackend(root), "pw")
    snap = repo.load_snapshot(pristine.snapshot_id)
    return Env(repo, root, pristine.src, snap, tmp_path)


def pack_names(env: Env) -> set[str]:
    return {p.name for p in (env.root / "data").rglob("*") if p.is_file()}


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def fresh_check(env: Env, *, read_data: bool = False) -> CheckReport:
    """Check through a newly opened repository, as the CLI would."""
    repo = Repository.open(LocalBackend(env.root), "pw")
    return check_repository(repo, read_data=read_data)


def objects(report: CheckReport) -> list[str]:
    return [issue.object for issue in report.errors]


# -- the generated backup itself --------------------------------------------------------------


def test_backup_has_the_shape_the_cases_rely_on(env: Env) -> None:
    assert env.pack_count() > 33  # small packs: many, and a checkpoint after 32
    assert len(env.content("big/a.bin")) >= 2
    assert env.content("dup/a_copy.bin") == env.content("big/a.bin")
    assert len(list((env.root / "index").iterdir())) == 2


# -- 1. clean -----------------------------------------------------------------------------------


def _tree_ids(env: Env) -> set[bytes]:
    return {tree_id for tree_id, _ in env.repo.walk_trees(env.snap.tree)}


def test_clean_repository_structure(env: Env) -> None:
    messages: list[str] = []
    report = check_repository(env.repo, progress=messages.append)
    assert report.ok
    assert report.errors == [] and report.notes == [] and report.damaged_blobs == []
    assert report.snapshots == 1
    assert report.trees == len(_tree_ids(env))
    assert report.blobs == len(env.files_by_blob())
    assert (report.packs_read, report.blobs_read) == (0, 0)
    assert messages[0] == "checking the config"
    assert f"checking the trees of snapshot {env.snap.short_id}" in messages


def test_clean_repository_read_data(env: Env) -> None:
    report = check_repository(env.repo, read_data=True)
    assert report.ok and report.errors == [] and report.notes == []
    assert report.snapshots == 1
    assert report.trees == len(_tree_ids(env))
    assert report.packs_read == env.pack_count()
    assert report.blobs_read == len(env.repo.index)


# -- 2. one flipped byte inside a data blob -------------------------------------------------------


def test_flipped_byte_in_data_pack(env: Env) -> None:
    target = env.content("big/a.bin")[1]
    loc = env.repo.index.find(target)
    assert loc is not None and loc.type == DATA_BLOB
    key, path = env.pack_file(target)
    flip_byte(path, loc.offset + loc.length // 2)

    assert fresh_check(env).errors == []  # header, sizes and trees are all intact

    report = fresh_check(env, read_data=True)
    assert objects(report) == [f"pack {key}", f"pack {key}"]
    pack_issue, blob_issue = report.errors
    assert pack_issue == CheckIssue(f"pack {key}", "content does not match its name (damaged)")
    assert target.hex()[:16] in blob_issue.message and AUTH_FAILED in blob_issue.message
    assert blob_issue.affected_files == env.affected("big/a.bin", "dup/a_copy.bin")
    assert report.damaged_blobs == [target.hex()]
    assert report.packs_read == env.pack_count()


def test_restore_around_a_damaged_blob(env: Env) -> None:
    target = env.content("big/a.bin")[1]
    loc = env.repo.index.find(target)
    assert loc is not None
    flip_byte(env.pack_file(target)[1], loc.offset + loc.length // 2)

    out = env.tmp / "out"
    intact = ["big/b.bin", "text/t07.txt", "big/nested/deeper/c.bin"]
    includes = [str(env.src / rel) for rel in intact]
    summary = Restorer(env.repo, env.snap, str(out), includes=includes).run()
    assert summary.warnings == [] and summary.files == len(intact)
    for rel in intact:
        restored = out / str(env.src).lstrip("/") / rel
        assert restored.read_bytes() == (env.src / rel).read_bytes()

    damaged = [str(env.src / "big/a.bin"), str(env.src / "text/t01.txt")]
    summary = Restorer(env.repo, env.snap, str(env.tmp / "out2"), includes=damaged).run()
    assert summary.files == 1  # the text file
    [warning] = summary.warnings
    assert warning.startswith(f"{env.tmp / 'out2'}{env.src}/big/a.bin: ")
    assert AUTH_FAILED in warning


# -- 3. damaged index file ------------------------------------------------------------------------


def test_flipped_byte_in_index_file(env: Env) -> None:
    # the index file that lists the pack holding the root tree: losing it hides everything
    root_pack = env.repo.index.find(env.snap.tree)
    assert root_pack is not None
    names = sorted(p.name for p in (env.root / "index").iterdir())
    holder = next(
        n for n in names if root_pack.pack in env.repo.read_index_files()[bytes.fromhex(n)].packs
    )
    orphaned = env.repo.read_index_files()[bytes.fromhex(holder)].packs
    path = env.root / "index" / holder
    flip_byte(path, path.stat().st_size // 2)

    report = fresh_check(env)
    assert objects(report) == [f"index file index/{holder}", f"tree {env.snap.tree.hex()}"]
    assert report.errors[0].message == AUTH_FAILED
    tree_issue = report.errors[1]
    assert tree_issue.message == (
        f"is listed in no index (pack {pack_key(root_pack.pack)} holds it: "
        "run `roost repair index`)"
    )
    assert tree_issue.affected_files == [f"snapshot {env.snap.short_id}: /"]
    assert sorted(report.notes) == sorted(
        f"pack {pack_key(pid)} is listed in no index: an interrupted backup left it and the "
        "next backup adopts it (or run `roost repair index`)"
        for pid in orphaned
    )
    assert report.snapshots == 1 and report.trees == 0


def test_flipped_byte_in_data_only_index_file(env: Env) -> None:
    """Losing the index file of data packs only: each missing blob names its files."""
    files = env.repo.read_index_files()
    root_pack = env.repo.index.find(env.snap.tree)
    assert root_pack is not None
    [(fid, data_only)] = [(f, i) for f, i in files.items() if root_pack.pack not in i.packs]
    assert all(e.type == DATA_BLOB for entries in data_only.packs.values() for e in entries)
    path = env.root / "index" / fid.hex()
    flip_byte(path, 40)

    report = fresh_check(env)
    lost = {e.id for entries in data_only.packs.values() for e in entries}
    assert lost <= set(env.files_by_blob())  # every one of them is used by some file
    assert report.errors[0] == CheckIssue(f"index file index/{fid.hex()}", AUTH_FAILED)
    blob_issues = {i.object: i for i in report.errors[1:]}
    assert set(blob_issues) == {f"blob {b.hex()}" for b in lost}
    for blob_id in lost:
        issue = blob_issues[f"blob {blob_id.hex()}"]
        assert issue.message.startswith("data blob is listed in no index (pack data/")
        assert issue.affected_files == env.affected_by({blob_id})
    assert report.trees == len(_tree_ids(env))
    assert len(report.notes) == len(data_only.packs)


# -- 4. damaged snapshot --------------------------------------------------------------------------


def test_flipped_byte_in_snapshot(env: Env) -> None:
    path = env.root / "snapshots" / env.snap.id
    flip_byte(path, path.stat().st_size // 2)
    report = fresh_check(env)
    assert report.errors == [CheckIssue(f"snapshot {env.snap.short_id}", AUTH_FAILED)]
    assert (report.snapshots, report.trees, report.blobs) == (0, 0, 0)
    assert report.notes == []


# -- 5. deleted pack ------------------------------------------------------------------------------


@pytest.mark.parametrize("read_data", [False, True])
def test_deleted_pack(env: Env, read_data: bool) -> None:
    target = env.content("big/b.bin")[0]
    key, path = env.pack_file(target)
    in_pack = {b for b in env.repo.index.blob_ids() if env.pack_file(b)[0] == key}
    path.unlink()

    report = fresh_check(env, read_data=read_data)
    assert report.errors == [
        CheckIssue(
            f"pack {key}",
            "is listed in the index but missing from storage",
            env.affected_by(in_pack),
        )
    ]
    assert (
        f"snapshot {env.snap.short_id}: {env.src / 'big/b.bin'}" in report.errors[0].affected_files
    )
    assert report.damaged_blobs == sorted(b.hex() for b in in_pack)
    assert report.packs_read == (env.pack_count() if read_data else 0)


def test_deleted_tree_pack(env: Env) -> None:
    key, path = env.pack_file(env.snap.tree)
    path.unlink()
    report = fresh_check(env)
    root = [f"snapshot {env.snap.short_id}: /"]
    assert objects(report) == [f"pack {key}", f"tree {env.snap.tree.hex()}"]
    assert report.errors[0].affected_files == root == report.errors[1].affected_files
    assert report.errors[1].message == f"cannot be read: {path} does not exist"
    assert (report.snapshots, report.trees, report.blobs) == (1, 0, 0)


@pytest.mark.parametrize("read_data", [False, True])
def test_damaged_tree_names_its_directory(env: Env, read_data: bool) -> None:
    tree_id = env.node("big/nested").subtree
    assert tree_id is not None
    loc = env.repo.index.find(tree_id)
    assert loc is not None and loc.type == TREE_BLOB
    key, path = env.pack_file(tree_id)
    trees, blobs = len(_tree_ids(env)), set(env.files_by_blob())
    below = set(env.content("big/nested/deeper/c.bin"))
    flip_byte(path, loc.offset + loc.length // 2)

    report = fresh_check(env, read_data=read_data)
    tree_issue = CheckIssue(
        f"tree {tree_id.hex()}",
        f"cannot be read: tree blob {tree_id.hex()[:16]} in pack {loc.pack.hex()[:16]} "
        + AUTH_FAILED,
        env.affected("big/nested"),
    )
    if not read_data:
        assert report.errors == [tree_issue]
    else:
        assert objects(report) == [f"pack {key}", f"pack {key}", f"tree {tree_id.hex()}"]
        assert report.errors[0].message == "content does not match its name (damaged)"
        assert report.errors[1].message == tree_issue.message.removeprefix("cannot be read: ")
        assert report.errors[1].affected_files == env.affected("big/nested")
        assert report.errors[2] == tree_issue
    assert report.trees == trees - 2  # big/nested and big/nested/deeper
    assert report.blobs == len(blobs - below)  # c.bin, the only file below, is not reached


# -- 6. truncated pack ----------------------------------------------------------------------------


@pytest.mark.parametrize("read_data", [False, True])
def test_truncated_pack(env: Env, read_data: bool) -> None:
    target = env.content("big/b.bin")[-1]
    loc = env.repo.index.find(target)
    assert loc is not None
    key, path = env.pack_file(target)
    cut = loc.offset + loc.length // 2
    os.truncate(path, cut)
    listed = [(b, env.repo.index.find(b)) for b in env.repo.index.blob_ids()]
    lost = {
        b
        for b, where in listed
        if where and where.pack == loc.pack and where.offset + where.length > cut
    }
    assert target in lost

    report = fresh_check(env, read_data=read_data)
    [issue] = report.errors
    assert issue.object == f"pack {key}"
    assert issue.message.startswith(f"is {cut} bytes, too small for the blobs the index lists")
    assert "has an unreadable header: pack trailer has the wrong magic" in issue.message
    assert ("content does not match its name" in issue.message) == read_data
    assert issue.affected_files == env.affected_by(lost)
    assert report.damaged_blobs == sorted(b.hex() for b in lost)


# -- 7. unindexed pack ----------------------------------------------------------------------------


def test_unindexed_pack_is_a_note_until_the_index_is_rebuilt(env: Env) -> None:
    before = pack_names(env)
    saver = BlobSaver(env.repo, env.repo.load_index(), workers=1)
    saver.save(DATA_BLOB, os.urandom(PACK_SIZE + 1000))  # fills a pack: uploaded at once
    saver.wait_idle()
    saver.close()  # a crash: no index file for that pack
    [orphan] = pack_names(env) - before
    key = pack_key(bytes.fromhex(orphan))

    report = fresh_check(env)
    assert report.ok and report.errors == []
    assert report.notes == [
        f"pack {key} is listed in no index: an interrupted backup left it and the next backup "
        "adopts it (or run `roost repair index`)"
    ]

    failures: list[str] = []
    rebuild_index(env.repo, lambda key, exc: failures.append(key))
    assert failures == []
    for read_data in (False, True):
        report = fresh_check(env, read_data=read_data)
        assert report.ok and report.errors == [] and report.notes == []
    assert report.packs_read == env.pack_count()


def test_shared_trees_are_loaded_once_and_damage_is_named_in_every_snapshot(env: Env) -> None:
    snaps = [env.snap] + [Archiver(env.repo).run([str(env.src)])[0] for _ in range(2)]
    per_snapshot = [{t for t, _ in env.repo.walk_trees(s.tree)} for s in snaps]
    trees = set().union(*per_snapshot)
    assert len(trees) < sum(map(len, per_snapshot))  # some trees are shared
    target = env.content("big/nested/deeper/c.bin")[0]
    loc = env.repo.index.find(target)
    assert loc is not None
    key, path = env.pack_file(target)
    flip_byte(path, loc.offset + 100)

    report = fresh_check(env, read_data=True)
    assert (report.snapshots, report.trees) == (3, len(trees))
    assert objects(report) == [f"pack {key}", f"pack {key}"]
    c_bin = env.src / "big/nested/deeper/c.bin"
    assert report.errors[1].affected_files == sorted(
        f"snapshot {s.short_id}: {c_bin}" for s in snaps
    )


@pytest.mark.parametrize(("read_data", "method"), [(False, "get_range"), (True, "get")])
def test_unreachable_storage_raises(env: Env, read_data: bool, method: str) -> None:
    faulty = FaultyBackend(LocalBackend(env.root))
    repo = Repository.open(faulty, "pw")
    faulty.fail_after(method, 5)
    with pytest.raises(StorageError, match="injected crash"):
        check_repository(repo, read_data=read_data)
    # each worker fails once at most, then the remaining packs are skipped
    assert faulty.calls[method] <= 5 + WORKERS < env.pack_count()


def test_damaged_config(env: Env) -> None:
    repo = Repository.open(LocalBackend(env.root), "pw")
    flip_byte(env.root / "config", 20)
    report = check_repository(repo)
    assert report.errors == [CheckIssue("config", AUTH_FAILED)]

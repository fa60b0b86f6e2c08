"""``roost check``: is every object readable, and does every snapshot have all of its data?

Structure check (always): the config decrypts; every index file decodes (a damaged one is
reported, the others are still used); every pack the index lists exists, is big enough for its
blobs and has a header that agrees with the index; a stored pack in no index is only a note (a
crashed backup leaves it, the next one adopts it); every snapshot decrypts; every tree a
snapshot reaches loads and verifies (each tree once); every data blob a file uses is indexed.
``read_data`` also downloads every pack (one per worker), checks its hash against its name and
decrypts and verifies every blob. Lost data (no intact copy) is mapped back to the files and
directories using it, per snapshot. Damage is reported, never raised; StorageError is raised.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from roost.engine.crypto import OVERHEAD, content_hash
from roost.engine.index import IndexFile, Location, MasterIndex
from roost.engine.pack import TRAILER, BlobEntry, pack_key, read_pack_entries
from roost.engine.recovery import list_packs, read_pack_header
from roost.engine.repository import CONFIG_AAD, Repository
from roost.engine.snapshot import Snapshot
from roost.engine.tree import Node, decode_tree
from roost.errors import (
    BlobNotFound,
    CorruptObject,
    ObjectNotFound,
    StorageError,
    UnsupportedFormat,
)

WORKERS = 8
_DAMAGE = (CorruptObject, UnsupportedFormat)
Listed = list[tuple[bytes, Location]]  # (blob id, location) the index gives for one pack
Problems = tuple[tuple[str, bytes], ...]  # (path relative to a tree, id of the lost blob)


@dataclass
class CheckIssue:
    object: str  # "pack data/ab/ab12…", "index file index/…", "snapshot 1a2b3c4d", "tree 9f…"
    message: str
    affected_files: list[str] = field(default_factory=list)  # "snapshot 1a2b3c4d: /srv/a.txt"


@dataclass
class CheckReport:
    errors: list[CheckIssue] = field(default_factory=list)
    snapshots: int = 0  # snapshots that decrypted
    trees: int = 0  # distinct trees loaded and verified
    blobs: int = 0  # distinct data blobs referenced by files
    packs_read: int = 0  # packs downloaded whole (read_data)
    notes: list[str] = field(default_factory=list)  # warnings that need no repair
    blobs_read: int = 0  # blobs decrypted and verified (read_data)
    damaged_blobs: list[str] = field(default_factory=list)  # hex ids with no intact copy

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _PackResult:
    problems: list[str] = field(default_factory=list)  # pack-level: reported as one issue
    lost: set[bytes] = field(default_factory=set)  # blobs lost through those problems
    blob_errors: list[tuple[bytes, str]] = field(default_factory=list)  # one issue each
    entries: list[BlobEntry] | None = None  # the header, when readable
    read: bool = False
    blobs_read: int = 0


def check_repository(
    repo: Repository, *, read_data: bool = False, progress: Callable[[str], None] | None = None
) -> CheckReport:
    """Check ``repo``; damage is reported in the result, never raised."""
    return _Checker(repo, read_data, progress or (lambda _message: None)).run()


class _Checker:
    def __init__(self, repo: Repository, read_data: bool, progress: Callable[[str], None]) -> None:
        self.repo = repo
        self.read_data = read_data
        self.say = progress
        self.report = CheckReport()
        self.index = MasterIndex()
        self.lost: dict[bytes, dict[bytes, CheckIssue]] = {}  # blob -> bad pack -> issue
        self.issues_for: dict[bytes, list[CheckIssue]] = {}  # lost blob -> issues to extend
        self.orphans: dict[bytes, str] = {}  # blob in an unindexed pack -> its pack key
        self.done: dict[bytes, Problems] = {}  # tree id -> lost blobs below it
        self.referenced: set[bytes] = set()

    def run(self) -> CheckReport:
        self.say("checking the config")
        self._check_config()
        self.say("loading index files")
        self._load_index()
        self._check_packs()
        self._find_dead_blobs()
        self._check_snapshots()
        self.report.blobs = len(self.referenced)
        for issue in self.report.errors:
            issue.affected_files = sorted(set(issue.affected_files))
        return self.report

    def _error(self, what: str, message: str) -> CheckIssue:
        issue = CheckIssue(what, message)
        self.report.errors.append(issue)
        return issue

    # -- config and index -----------------------------------------------------------------

    def _check_config(self) -> None:
        try:
            self.repo.key.decrypt(self.repo.backend.get("config"), CONFIG_AAD, "config")
        except ObjectNotFound:
            self._error("config", "is missing")
        except CorruptObject as exc:
            self._error("config", _reason(exc, "config"))

    def _load_index(self) -> None:
        names = sorted(info.key for info in self.repo.backend.list("index/"))
        with ThreadPoolExecutor(WORKERS) as pool:
            loaded = list(pool.map(self._read_index_file, names))
        files: dict[bytes, IndexFile] = {}
        for name, result in zip(names, loaded, strict=True):
            if isinstance(result, IndexFile):
                files[bytes.fromhex(name.split("/", 1)[1])] = result
            elif result is not None:
                self._error(f"index file {name}", result)
        self.index.merge(files)

    def _read_index_file(self, name: str) -> IndexFile | str | None:
        """The decoded file, or what is wrong with it; None if it vanished (prune)."""
        try:
            data = self.repo.backend.get(name)
        except ObjectNotFound:
            return None
        try:
            decoded = IndexFile.decode(self.repo.key, data, "index file")
        except _DAMAGE as exc:
            return _reason(exc, "index file")
        if content_hash(data).hex() != name.split("/", 1)[1]:
            return "content does not match its name"
        return decoded

    # -- packs ----------------------------------------------------------------------------

    def _check_packs(self) -> None:
        stored = list_packs(self.repo)
        by_pack: dict[bytes, Listed] = {}
        for blob_id in self.index.blob_ids():
            for loc in self.index.locations(blob_id):
                by_pack.setdefault(loc.pack, []).append((blob_id, loc))
        for pack_id in sorted(by_pack.keys() - stored.keys()):
            message = "is listed in the index but missing from storage"
            issue = self._error(f"pack {pack_key(pack_id)}", message)
            self._lose((blob_id for blob_id, _ in by_pack[pack_id]), pack_id, issue)
        jobs = sorted((key, size, pid, by_pack.get(pid, [])) for pid, (key, size) in stored.items())
        self.say(f"{'reading' if self.read_data else 'checking'} {len(jobs)} packs")
        self._run_pack_jobs(jobs)

    def _run_pack_jobs(self, jobs: list[tuple[str, int, bytes, Listed]]) -> None:
        failed = threading.Event()

        def work(job: tuple[str, int, bytes, Listed]) -> _PackResult:
            if failed.is_set():  # storage is failing: the main thread raises before using this
                return _PackResult()
            try:
                return _check_pack(self.repo, *job, read_data=self.read_data)
            except StorageError:
                failed.set()
                raise

        pool = ThreadPoolExecutor(WORKERS)
        try:  # results come in order and hold no pack data: one pack in memory per worker
            results = zip(jobs, pool.map(work, jobs), strict=True)
            for count, ((key, _, pack_id, listed), result) in enumerate(results, 1):
                self._record_pack(key, pack_id, bool(listed), result)
                if self.read_data:
                    self.say(f"read pack {count}/{len(jobs)}")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _record_pack(self, key: str, pack_id: bytes, indexed: bool, result: _PackResult) -> None:
        if result.problems:
            self._lose(result.lost, pack_id, self._error(f"pack {key}", "; ".join(result.problems)))
        for blob_id, message in result.blob_errors:
            self._lose([blob_id], pack_id, self._error(f"pack {key}", message))
        if not indexed:
            self.report.notes.append(
                f"pack {key} is listed in no index: an interrupted backup left it and the next "
                "backup adopts it (or run `roost repair index`)"
            )
            self.orphans.update((entry.id, key) for entry in result.entries or ())
        self.report.packs_read += result.read
        self.report.blobs_read += result.blobs_read

    def _lose(self, blob_ids: Iterable[bytes], pack_id: bytes, issue: CheckIssue) -> None:
        for blob_id in blob_ids:
            self.lost.setdefault(blob_id, {}).setdefault(pack_id, issue)

    def _find_dead_blobs(self) -> None:
        """A blob is lost when every location the index knows for it is bad."""
        for blob_id, bad in self.lost.items():
            locations = self.index.locations(blob_id)
            if locations and all(loc.pack in bad for loc in locations):
                self.issues_for[blob_id] = list(bad.values())
        self.report.damaged_blobs = sorted(blob_id.hex() for blob_id in self.issues_for)

    def _orphan_hint(self, blob_id: bytes) -> str:
        key = self.orphans.get(blob_id)
        return f" (pack {key} holds it: run `roost repair index`)" if key else ""

    # -- snapshots and trees ----------------------------------------------------------------

    def _check_snapshots(self) -> None:
        for snapshot_id in sorted(self.repo.snapshot_ids()):
            snap = self._load_snapshot(snapshot_id)
            if snap is None:
                continue
            self.report.snapshots += 1
            self.say(f"checking the trees of snapshot {snap.short_id}")
            for rel, blob_id in self._walk(snap.tree):
                for issue in self.issues_for[blob_id]:
                    issue.affected_files.append(f"snapshot {snap.short_id}: /{rel}")

    def _load_snapshot(self, snapshot_id: str) -> Snapshot | None:
        what = f"snapshot {snapshot_id[:8]}"
        try:
            return self.repo.load_snapshot(snapshot_id)
        except ObjectNotFound:
            return None  # deleted by a concurrent forget
        except _DAMAGE as exc:
            self._error(what, _reason(exc, what))
            return None

    def _walk(self, root: bytes) -> Problems:
        """Load every tree below ``root`` not seen before; return the lost blobs below it."""
        stack: list[bytes] = [root]
        pending: dict[bytes, list[Node]] = {}
        while stack:
            tree_id = stack[-1]
            if tree_id in self.done:
                stack.pop()
                continue
            nodes = pending.get(tree_id)
            if nodes is None:
                loaded = self._load_tree(tree_id)
                if loaded is None:
                    self.done[tree_id] = (("", tree_id),)
                    continue
                pending[tree_id] = nodes = loaded
                subtrees = dict.fromkeys(n.subtree for n in nodes if n.subtree is not None)
                children = [t for t in subtrees if t not in pending and t not in self.done]
                if children:
                    stack.extend(children)
                    continue
            stack.pop()
            del pending[tree_id]
            self.done[tree_id] = tuple(p for node in nodes for p in self._node_problems(node))
        return self.done[root]

    def _load_tree(self, tree_id: bytes) -> list[Node] | None:
        loc = self.index.find(tree_id)
        try:
            if loc is None:
                raise BlobNotFound(f"is listed in no index{self._orphan_hint(tree_id)}")
            nodes = decode_tree(self.repo.read_blob_at(tree_id, loc))
        except (*_DAMAGE, BlobNotFound, ObjectNotFound) as exc:
            message = str(exc) if loc is None else f"cannot be read: {exc}"
            issue = self._error(f"tree {tree_id.hex()}", message)
            self.issues_for.setdefault(tree_id, []).append(issue)
            return None
        self.report.trees += 1
        return nodes

    def _node_problems(self, node: Node) -> Problems:
        name = os.fsdecode(node.name)
        if node.subtree is not None:
            below = self.done.get(node.subtree, ())  # absent only for a (forged) cycle
            return tuple((f"{name}/{rel}" if rel else name, bad) for rel, bad in below)
        lost = [blob_id for blob_id in dict.fromkeys(node.content) if self._is_lost(blob_id)]
        return tuple((name, blob_id) for blob_id in lost)

    def _is_lost(self, blob_id: bytes) -> bool:
        self.referenced.add(blob_id)
        if blob_id in self.issues_for:
            return True
        if self.index.find(blob_id) is not None:
            return False
        message = f"data blob is listed in no index{self._orphan_hint(blob_id)}"
        self.issues_for[blob_id] = [self._error(f"blob {blob_id.hex()}", message)]
        return True


# -- one pack (runs in a worker thread) ---------------------------------------------------


def _check_pack(
    repo: Repository, key: str, size: int, pack_id: bytes, listed: Listed, *, read_data: bool
) -> _PackResult:
    result = _PackResult()
    need = _min_size(listed)
    if size < need:
        result.problems.append(
            f"is {size} bytes, too small for the blobs the index lists (at least {need}): truncated"
        )
        result.lost = {blob_id for blob_id, loc in listed if loc.offset + loc.length > size}
    try:
        if read_data:
            _read_pack(repo, key, pack_id, listed, result)
        else:
            result.entries = read_pack_header(repo, key, size)
    except ObjectNotFound:
        result.problems.append("disappeared during the check")
        result.lost = {blob_id for blob_id, _ in listed}
    except _DAMAGE as exc:
        header = f"header of pack {key}"
        result.problems.append(f"has an unreadable header: {_reason(exc, header)}")
    if result.entries is not None:
        _compare_with_index(result.entries, listed, result)
    return result


def _min_size(listed: Listed) -> int:
    if not listed:
        return 0
    data_end = max(loc.offset + loc.length for _, loc in listed)
    # the header's records are compressed (pack header version 2): at least its version
    # byte follows the data; a shorter cut inside the header shows when it is read
    return data_end + OVERHEAD + 1 + TRAILER.size


def _read_pack(
    repo: Repository, key: str, pack_id: bytes, listed: Listed, result: _PackResult
) -> None:
    data = repo.backend.get(key)
    result.read = True
    if content_hash(data) != pack_id:
        result.problems.append("content does not match its name (damaged)")
    try:
        result.entries = read_pack_entries(repo.key, data, "pack")
    except _DAMAGE as exc:
        result.problems.append(f"has an unreadable header: {_reason(exc, 'pack header')}")
    # verify the blobs where the header says, or else where the index says
    entries = result.entries
    targets = listed if entries is None else [(e.id, _location(pack_id, e)) for e in entries]
    for blob_id, loc in targets:
        if blob_id in result.lost:
            continue
        result.blobs_read += 1
        try:
            repo.decode_blob(blob_id, loc, data[loc.offset : loc.offset + loc.length])
        except _DAMAGE as exc:
            result.blob_errors.append((blob_id, str(exc)))


def _compare_with_index(entries: list[BlobEntry], listed: Listed, result: _PackResult) -> None:
    in_header = {entry.id: entry for entry in entries}
    for blob_id, loc in listed:
        entry = in_header.get(blob_id)
        if entry is None:
            message = f"blob {blob_id.hex()} listed in the index is missing from its pack"
        elif _location(loc.pack, entry) != loc._replace(tombstoned_ns=0):
            message = (
                f"blob {blob_id.hex()} is at offset {entry.offset} length {entry.length} in "
                f"the pack header but at offset {loc.offset} length {loc.length} in the index"
            )
        else:
            continue
        result.blob_errors.append((blob_id, message))


def _location(pack_id: bytes, e: BlobEntry) -> Location:
    return Location(pack_id, e.type, e.offset, e.length, e.raw_length, e.compression)


def _reason(exc: Exception, what: str) -> str:
    """The exception's message without the object name it starts with (the issue has it)."""
    return str(exc).removeprefix(f"{what} ")

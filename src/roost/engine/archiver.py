"""Backup: walk the sources, reuse unchanged files from the parent, save new data, snapshot.

Flow: take a lease -> load the index (and adopt packs a crashed backup left unindexed) ->
walk each source depth first -> for every file either reuse the parent's chunk list (same
size, mtime, ctime and inode) or read, chunk and save it -> save each directory as a tree
blob -> flush packs and index -> write the snapshot -> release the lease.

Per-file problems never abort the backup: they become *missed files* with a reason, listed
in the snapshot, and the next backup reads them again even if their metadata is unchanged.
"""

from __future__ import annotations

import errno
import getpass
import os
import socket
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from roost import __version__
from roost.engine import fsmeta
from roost.engine.chunker import Chunker, ExtentReader
from roost.engine.filters import ExcludeRules
from roost.engine.index import MasterIndex
from roost.engine.lease import Lease
from roost.engine.pack import DATA_BLOB, TREE_BLOB
from roost.engine.progress import BackupProgress
from roost.engine.recovery import adopt_orphan_packs
from roost.engine.repository import Repository
from roost.engine.snapshot import Snapshot
from roost.engine.tree import DIR, FILE, Node, encode_tree
from roost.engine.uploader import BlobSaver
from roost.errors import SourceError

_NOATIME = getattr(os, "O_NOATIME", 0)
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "vanished during backup",
    errno.EIO: "I/O error",
    errno.EBUSY: "locked by another process",
    errno.ETXTBSY: "locked by another process",
    errno.ELOOP: "replaced by a symlink during backup",
}


def describe_os_error(exc: OSError) -> str:
    return _REASONS.get(exc.errno or 0, exc.strerror or str(exc))


@dataclass
class BackupOptions:
    rules: ExcludeRules = field(default_factory=ExcludeRules)
    parent: Snapshot | None = None
    force_read: frozenset[bytes] = frozenset()
    tags: list[str] = field(default_factory=list)
    hostname: str | None = None
    read_xattrs: bool = True


@dataclass
class BackupSummary:
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    dirs: int = 0
    other: int = 0
    files_missed: int = 0
    bytes_read: int = 0
    bytes_total: int = 0  # logical size of all files in the snapshot
    bytes_new: int = 0  # plaintext bytes of new blobs
    bytes_stored: int = 0  # bytes uploaded after compression and encryption
    blobs_new: int = 0
    packs_written: int = 0


class _Walk:
    """State of one walk: the saver, the parent lookup, hardlink memory, counters."""

    def __init__(
        self, repo: Repository, saver: BlobSaver, options: BackupOptions, progress: BackupProgress
    ) -> None:
        self.repo = repo
        self.saver = saver
        self.options = options
        self.progress = progress
        self.summary = BackupSummary()
        self.missed: list[dict[str, str]] = []
        self.hardlinks: dict[tuple[int, int], list[bytes]] = {}
        cfg = repo.config
        self.chunker = Chunker(
            cfg.chunk_min, cfg.chunk_avg, cfg.chunk_max, repo.key.master.chunker_seed
        )
        self.force_read = set(options.force_read)
        if options.parent is not None:
            self.force_read.update(os.fsencode(m["path"]) for m in options.parent.missed)

    def miss(self, path: bytes, reason: str) -> None:
        self.summary.files_missed += 1
        self.missed.append({"path": os.fsdecode(path), "reason": reason})
        self.progress.missed(path, reason)

    # -- parent lookup ------------------------------------------------------------------

    def parent_children(self, subtree: bytes | None) -> dict[bytes, Node]:
        if subtree is None:
            return {}
        try:
            return {node.name: node for node in self.repo.load_tree(subtree)}
        except Exception:
            return {}

    # -- directories --------------------------------------------------------------------

    def save_dir(
        self, path: bytes, rel: bytes, node: Node, root_dev: int, parent: Node | None
    ) -> Node:
        self.summary.dirs += 1
        old = self.parent_children(parent.subtree if parent and parent.type == DIR else None)
        children: list[Node] = []
        if not (self.options.rules.one_file_system and node.device != root_dev):
            children = self.save_entries(path, rel, root_dev, old)
        node.subtree, _ = self.saver.save(TREE_BLOB, encode_tree(children))
        return node

    def save_entries(
        self, path: bytes, rel: bytes, root_dev: int, old: dict[bytes, Node]
    ) -> list[Node]:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.miss(path, f"cannot list directory: {describe_os_error(exc)}")
            return []
        children = []
        for entry in entries:
            child = self.save_entry(
                entry.path,
                rel + b"/" + entry.name if rel else entry.name,
                entry.name,
                root_dev,
                old.get(entry.name),
            )
            if child is not None:
                children.append(child)
        return children

    def save_entry(
        self, path: bytes, rel: bytes, name: bytes, root_dev: int, parent: Node | None
    ) -> Node | None:
        try:
            st = os.lstat(path)
            is_dir = stat.S_ISDIR(st.st_mode)
            if self.options.rules.excludes_path(rel, is_dir):
                return None
            if stat.S_ISREG(st.st_mode) and self.options.rules.excludes_size(st.st_size):
                return None
            node = fsmeta.node_from_stat(name, st, path, read_xattrs=self.options.read_xattrs)
        except OSError as exc:
            self.miss(path, describe_os_error(exc))
            return None
        if node.type == DIR:
            return self.save_dir(path, rel, node, root_dev, parent)
        if node.type == FILE:
            return self.save_file(path, node, parent)
        self.summary.other += 1
        return node

    # -- files --------------------------------------------------------------------------

    def save_file(self, path: bytes, node: Node, parent: Node | None) -> Node | None:
        self.summary.bytes_total += node.size
        if node.nlink > 1 and (node.device, node.inode) in self.hardlinks:
            node.content = list(self.hardlinks[(node.device, node.inode)])
            self.count_unchanged(path, node)
            return node
        if parent is not None and node.same_file_as(parent) and path not in self.force_read:
            node.content, node.extents = list(parent.content), parent.extents
            self.count_unchanged(path, node)
        else:
            self.progress.file_started(path, node.size)
            if not self.read_file(path, node):
                return None
            state = "new" if parent is None else "changed"
            if state == "new":
                self.summary.files_new += 1
            else:
                self.summary.files_changed += 1
            self.progress.file_done(path, state)
        if node.nlink > 1:
            self.hardlinks[(node.device, node.inode)] = node.content
        return node

    def count_unchanged(self, path: bytes, node: Node) -> None:
        self.summary.files_unchanged += 1
        self.progress.bytes_done(node.size)
        self.progress.file_done(path, "unchanged")

    def read_file(self, path: bytes, node: Node) -> bool:
        try:
            fd = _open_for_reading(path)
        except OSError as exc:
            self.miss(path, describe_os_error(exc))
            return False
        try:
            return self.read_open_file(fd, path, node)
        except OSError as exc:
            self.miss(path, describe_os_error(exc))
            return False
        finally:
            os.close(fd)

    def read_open_file(self, fd: int, path: bytes, node: Node) -> bool:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            self.miss(path, "replaced by a non-file during backup")
            return False
        _refresh_from_stat(node, before)
        extents = (
            fsmeta.data_extents(fd, before.st_size) if fsmeta.is_sparse_candidate(before) else None
        )
        node.extents = extents
        expected = sum(n for _, n in extents) if extents is not None else before.st_size
        node.content, got = self.chunk_file(fd, extents or [(0, before.st_size)], expected)
        after = os.fstat(fd)
        if got != expected or _changed(before, after):
            self.miss(path, "changed while being read")
        return True

    def chunk_file(
        self, fd: int, extents: list[tuple[int, int]], expected: int
    ) -> tuple[list[bytes], int]:
        if expected <= self.chunker.min_size and len(extents) <= 1:
            start = extents[0][0] if extents else 0
            data = os.pread(fd, expected, start) if expected else b""
            self.account_read(len(data))
            return ([self.saver.save(DATA_BLOB, data)[0]] if data else []), len(data)
        reader = ExtentReader(fd, extents)
        content = []
        for chunk in self.chunker.chunks(reader):
            content.append(self.saver.save(DATA_BLOB, chunk)[0])
            self.account_read(len(chunk))
        return content, reader.bytes_read

    def account_read(self, count: int) -> None:
        self.summary.bytes_read += count
        self.progress.bytes_done(count)


def _open_for_reading(path: bytes) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags | _NOATIME)
    except PermissionError:
        if not _NOATIME:
            raise
        return os.open(path, flags)  # O_NOATIME needs ownership; read without it


def _refresh_from_stat(node: Node, st: os.stat_result) -> None:
    node.size, node.mtime_ns, node.ctime_ns = st.st_size, st.st_mtime_ns, st.st_ctime_ns
    node.inode, node.device = st.st_ino, st.st_dev


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    keys = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino")
    return any(getattr(before, k) != getattr(after, k) for k in keys)


# -- sources and the virtual root ---------------------------------------------------------


def normalise_sources(sources: Iterable[str | bytes]) -> list[bytes]:
    """Absolute, existing, without duplicates or paths nested in another source."""
    result: list[bytes] = []
    for source in sources:
        path = os.path.abspath(os.fsencode(source))
        try:
            os.lstat(path)
        except FileNotFoundError:
            raise SourceError(f"source path {os.fsdecode(path)} does not exist") from None
        except OSError as exc:
            raise SourceError(f"cannot read source {os.fsdecode(path)}: {exc.strerror}") from None
        result.append(path)
    result = sorted(set(result))
    return [p for p in result if not any(p != q and _is_within(p, q) for q in result)]


def _is_within(path: bytes, root: bytes) -> bool:
    return root == b"/" or path.startswith(root.rstrip(b"/") + b"/")


def _virtual_layout(sources: list[bytes]) -> dict[bytes, object]:
    """Nested dict of path components; a leaf (None) is a source to back up whole."""
    layout: dict[bytes, object] = {}
    for source in sources:
        parts = [p for p in source.split(b"/") if p]
        cursor = layout
        for part in parts[:-1]:
            nxt = cursor.setdefault(part, {})
            assert isinstance(nxt, dict)
            cursor = nxt
        if parts:
            cursor[parts[-1]] = None
    return layout


class Archiver:
    """Runs one backup of a list of source paths into a repository."""

    def __init__(
        self,
        repo: Repository,
        options: BackupOptions | None = None,
        progress: BackupProgress | None = None,
        *,
        workers: int | None = None,
        checkpoint_seconds: float = 30.0,
    ) -> None:
        self.repo = repo
        self.options = options or BackupOptions()
        self.progress = progress or BackupProgress()
        self.workers = workers
        self.checkpoint_seconds = checkpoint_seconds

    def run(self, sources: Iterable[str | bytes]) -> tuple[Snapshot, BackupSummary]:
        paths = normalise_sources(sources)
        with Lease(self.repo, "backup"):
            index = self.repo.load_index()
            adopt_orphan_packs(self.repo, index)
            return self._run_locked(paths, index)

    def _run_locked(self, paths: list[bytes], index: MasterIndex) -> tuple[Snapshot, BackupSummary]:
        saver = BlobSaver(
            self.repo, index, workers=self.workers, checkpoint_seconds=self.checkpoint_seconds
        )
        try:
            walk = _Walk(self.repo, saver, self.options, self.progress)
            root = self._save_virtual(walk, b"/", _virtual_layout(paths), self._parent_root())
            saver.flush()
        finally:
            saver.close()
        summary = walk.summary
        stats = saver.stats
        summary.bytes_new, summary.bytes_stored = stats.bytes_new_raw, stats.bytes_stored
        summary.blobs_new, summary.packs_written = stats.blobs_new, stats.packs_written
        snap = Snapshot(
            time=datetime.now(UTC),
            hostname=self.options.hostname or socket.gethostname(),
            username=_username(),
            paths=[os.fsdecode(p) for p in paths],
            tree=root,
            parent=self.options.parent.id if self.options.parent else None,
            tags=list(self.options.tags),
            excludes=list(self.options.rules.patterns),
            summary=asdict(summary),
            missed=walk.missed,
            program=f"roost {__version__}",
        )
        self.repo.save_snapshot(snap)
        return snap, summary

    def _parent_root(self) -> Node | None:
        parent = self.options.parent
        if parent is None:
            return None
        return Node(name=b"", type=DIR, subtree=parent.tree)

    def _save_virtual(
        self, walk: _Walk, path: bytes, layout: dict[bytes, object], parent: Node | None
    ) -> bytes:
        """Save the directories leading to the sources, holding only the chosen children."""
        old = walk.parent_children(parent.subtree if parent else None)
        children = []
        for name, sub in sorted(layout.items()):
            child_path = os.path.join(path, name)
            if sub is None:
                root_dev = os.lstat(child_path).st_dev
                node = walk.save_entry(child_path, b"", name, root_dev, old.get(name))
            else:
                assert isinstance(sub, dict)
                node = self._virtual_dir(walk, child_path, name, sub, old.get(name))
            if node is not None:
                children.append(node)
        tree_id, _ = walk.saver.save(TREE_BLOB, encode_tree(children))
        return tree_id

    def _virtual_dir(
        self,
        walk: _Walk,
        path: bytes,
        name: bytes,
        layout: dict[bytes, object],
        parent: Node | None,
    ) -> Node:
        node = fsmeta.node_from_stat(
            name, os.lstat(path), path, read_xattrs=self.options.read_xattrs
        )
        node.subtree = self._save_virtual(walk, path, layout, parent)
        return node


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())

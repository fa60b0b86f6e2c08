"""Backup: walk the sources, reuse unchanged files from the parent, save new data, snapshot.

Flow: take a lease -> load the index (and adopt packs a crashed backup left unindexed) ->
walk each source depth first -> for every file either reuse the parent's chunk list (same
size, mtime, ctime and inode) or read, chunk and save it -> save each directory as a tree
blob -> flush packs and index -> write the snapshot -> release the lease.

Per-file problems never abort the backup: they become *missed files* with a reason, listed
in the snapshot, and the next backup reads them again even if their metadata is unchanged.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from roost import __version__
from roost.engine import fsmeta, workerproc
from roost.engine.counters import Counters, WalkSettings
from roost.engine.filters import ExcludeRules
from roost.engine.index import MasterIndex
from roost.engine.lease import Lease
from roost.engine.pack import TREE_BLOB
from roost.engine.progress import BackupProgress
from roost.engine.recovery import adopt_orphan_packs
from roost.engine.repository import Repository
from roost.engine.snapshot import Snapshot
from roost.engine.tree import DIR, Node, encode_tree
from roost.engine.uploader import BlobSaver
from roost.engine.walker import Child, Walker
from roost.errors import SourceError
from roost.memory import fewer_collections

__all__ = ["Archiver", "BackupOptions", "BackupSummary", "normalise_sources"]


@dataclass
class BackupOptions:
    rules: ExcludeRules = field(default_factory=ExcludeRules)
    parent: Snapshot | None = None
    force_read: frozenset[bytes] = frozenset()
    tags: list[str] = field(default_factory=list)
    hostname: str | None = None
    read_xattrs: bool = True
    # read path -> recorded path: read a source from a filesystem snapshot (btrfs, LVM, VSS)
    # while the snapshot records, and restores to, the path the user asked for
    path_map: dict[bytes, bytes] = field(default_factory=dict)

    def recorded(self, read_path: bytes) -> bytes:
        return _translate(read_path, self.path_map)

    def read_path(self, recorded_path: bytes) -> bytes:
        return _translate(recorded_path, {v: k for k, v in self.path_map.items()})


def _translate(path: bytes, roots: dict[bytes, bytes]) -> bytes:
    """Replace the longest root in ``roots`` that ``path`` lies within by its mapping."""
    for root in sorted(roots, key=len, reverse=True):
        if path == root or path.startswith(root.rstrip(b"/") + b"/"):
            return roots[root] + path[len(root) :]
    return path


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
        readers: int = 1,
        processes: int | None = None,
        checkpoint_seconds: float = 30.0,
    ) -> None:
        self.repo = repo
        self.options = options or BackupOptions()
        self.progress = progress or BackupProgress()
        self.workers = workers
        self.readers = readers
        # worker processes for small and medium files (0: threads only; see procreader.py)
        self.processes = workerproc.default_processes() if processes is None else processes
        self.checkpoint_seconds = checkpoint_seconds

    def run(self, sources: Iterable[str | bytes]) -> tuple[Snapshot, BackupSummary]:
        paths = normalise_sources(sources)  # the paths read, maybe inside a snapshot
        with Lease(self.repo, "backup"), fewer_collections():
            index = self.repo.load_index()
            adopt_orphan_packs(self.repo, index)
            return self._run_locked(paths, index)

    def _run_locked(self, paths: list[bytes], index: MasterIndex) -> tuple[Snapshot, BackupSummary]:
        saver = BlobSaver(
            self.repo,
            index,
            workers=self.workers,
            checkpoint_seconds=self.checkpoint_seconds,
            on_backlog=self.progress.backlog,
        )
        counters = Counters()
        walker = Walker(
            self.repo,
            saver,
            self._settings(),
            self.progress,
            counters,
            readers=self.readers,
            processes=self.processes,
        )
        try:
            recorded = sorted(self.options.recorded(p) for p in paths)
            layout = _virtual_layout(recorded)
            root = self._save_virtual(walker, b"/", layout, self._parent_root())
            walker.finish()
            # the scan workers are done: gone before the last packs and index are written,
            # they no longer add their memory to the end of the backup, its busiest moment
            walker.close()
            saver.flush()
        finally:
            walker.close()
            saver.close()
        summary = BackupSummary(**counters.values)
        stats = saver.stats
        summary.bytes_new, summary.bytes_stored = stats.bytes_new_raw, stats.bytes_stored
        summary.blobs_new, summary.packs_written = stats.blobs_new, stats.packs_written
        missed = [
            {**m, "path": os.fsdecode(self.options.recorded(os.fsencode(m["path"])))}
            for m in counters.missed
        ]
        snap = self._snapshot(recorded, root, summary, missed)
        self.repo.save_snapshot(snap)
        return snap, summary

    def _settings(self) -> WalkSettings:
        force = set(self.options.force_read)
        if self.options.parent is not None:
            force.update(os.fsencode(m["path"]) for m in self.options.parent.missed)
        in_read_space = frozenset(self.options.read_path(p) for p in force)
        return WalkSettings(self.options.rules, self.options.read_xattrs, in_read_space)

    def _snapshot(
        self, paths: list[bytes], root: bytes, summary: BackupSummary, missed: list[dict[str, str]]
    ) -> Snapshot:
        return Snapshot(
            time=datetime.now(UTC),
            hostname=self.options.hostname or socket.gethostname(),
            username=_username(),
            paths=[os.fsdecode(p) for p in paths],
            tree=root,
            parent=self.options.parent.id if self.options.parent else None,
            tags=list(self.options.tags),
            excludes=list(self.options.rules.patterns),
            summary=asdict(summary),
            missed=missed,
            program=f"roost {__version__}",
        )

    def _parent_root(self) -> Node | None:
        parent = self.options.parent
        if parent is None:
            return None
        return Node(name=b"", type=DIR, subtree=parent.tree)

    def _save_virtual(
        self, walker: Walker, path: bytes, layout: dict[bytes, object], parent: Node | None
    ) -> bytes:
        """Save the directories leading to the sources, holding only the chosen children."""
        old = walker.parent_children(parent.subtree if parent else None)
        children: list[Child] = []
        for name, sub in sorted(layout.items()):
            child_path = os.path.join(path, name)
            if sub is None:
                read_path = self.options.read_path(child_path)
                root_dev = os.lstat(read_path).st_dev
                walker.save_entry_blocking(read_path, name, root_dev, old.get(name), children)
            else:
                assert isinstance(sub, dict)
                children.append(self._virtual_dir(walker, child_path, name, sub, old.get(name)))
        walker.drain(block=True)
        resolved = walker.resolve_all(children)
        tree_id, _ = walker.saver.save(TREE_BLOB, encode_tree(resolved))
        return tree_id

    def _virtual_dir(
        self,
        walker: Walker,
        path: bytes,
        name: bytes,
        layout: dict[bytes, object],
        parent: Node | None,
    ) -> Node:
        node = fsmeta.node_from_stat(
            name, os.lstat(path), path, read_xattrs=self.options.read_xattrs
        )
        node.subtree = self._save_virtual(walker, path, layout, parent)
        return node


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())

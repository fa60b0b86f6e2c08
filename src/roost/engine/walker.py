"""The archiver's walk: directories in order, files scanned in parallel, trees saved post-order.

The walking thread lists directories; ``scandir`` tells regular files apart without a
``stat``, and those go in batches to worker processes that stat, compare with the parent
snapshot and read them (filebatch.py, procreader.py). Everything else (directories, symlinks,
devices) is stat'ed here, and the files a worker hands back (hardlinks, big files) are read by
a small pool of reader threads. A directory's tree can only be encoded when all its children
are known, so finished directories wait in a FIFO in post-order (children before parents) and
are encoded as soon as their children are done, without stopping the walk.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import orjson

from roost.engine import dirtree, fsmeta, procreader
from roost.engine.chunker import Chunker
from roost.engine.counters import Counters, WalkSettings, count
from roost.engine.dirtask import DirTask, Slot, is_unset
from roost.engine.filebatch import FileBatches
from roost.engine.filereader import FileReader, describe_os_error
from roost.engine.pack import TREE_BLOB
from roost.engine.parenttree import ParentDir
from roost.engine.progress import BackupProgress
from roost.engine.repository import Repository
from roost.engine.tree import DIR, FILE, Node, node_from_json
from roost.engine.uploader import BlobSaver
from roost.errors import RoostError

SNAPSHOT_PREFIX = b".roost-snap-"


@dataclass
class _Linked:
    """A later name of a hardlinked inode: takes the content of the first name once known."""

    node: Node
    first: Node | Future[Node | None]
    path: bytes


Child = Node | Future[Node | None] | _Linked | Slot


class Walker:
    def __init__(
        self,
        repo: Repository,
        saver: BlobSaver,
        settings: WalkSettings,
        progress: BackupProgress,
        counters: Counters,
        readers: int,
        processes: int = 0,
    ) -> None:
        self.repo = repo
        self.saver = saver
        self.options = settings
        self.progress = progress
        self.counters = counters
        cfg = repo.config
        chunker = Chunker(cfg.chunk_min, cfg.chunk_avg, cfg.chunk_max, repo.key.master.chunker_seed)
        self.reader = FileReader(saver, chunker, self._bytes_read)
        self._pool = ThreadPoolExecutor(max(1, readers), thread_name_prefix="roost-reader")
        setup = procreader.WorkerSetup(
            repo.key.master.id_key,
            repo.key.master.chunker_seed,
            cfg.chunk_min,
            cfg.chunk_avg,
            cfg.chunk_max,
            settings.read_xattrs,
            settings.rules.larger_than,
            procreader.MAX_FILE_SIZE,
            procreader.BATCH_BYTES,
        )
        self._batches = FileBatches(setup, processes, self._pool, saver, self._apply_results)
        self._slots = threading.BoundedSemaphore(max(1, readers) * 16)
        self._pending: deque[DirTask] = deque()
        self._hardlinks: dict[tuple[int, int], Node | Future[Node | None]] = {}

    def finish(self) -> None:
        """Wait until the files handed to the scanners are packed (before the final flush)."""
        self._batches.wait_all()

    def close(self) -> None:
        self._batches.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- parent lookup ------------------------------------------------------------------

    def parent_children(self, subtree: bytes | None) -> dict[bytes, Node]:
        parent = ParentDir.decode_or_none(subtree, self.parent_tree(subtree))
        return {} if parent is None else parent.nodes()

    def parent_tree(self, subtree: bytes | None) -> bytes | None:
        """The parent snapshot's tree blob ``subtree``, not decoded (see DirTask.parent_dir)."""
        if subtree is None:
            return None
        try:
            return self.repo.read_blob(subtree)
        except RoostError:
            return None  # an unreadable parent tree only costs re-reading

    # -- directories --------------------------------------------------------------------

    def save_dir(
        self, path: bytes, rel: bytes, node: Node, root_dev: int, parent: Node | None
    ) -> Node:
        self.counters.add(dirs=1)
        directory = path if path.endswith(b"/") else path + b"/"
        task = DirTask(node, directory, rel, root_dev)
        if not (self.options.rules.one_file_system and node.device != root_dev):
            if parent is not None and parent.type == DIR:
                task.subtree, task.tree = parent.subtree, self.parent_tree(parent.subtree)
            self._save_entries(path, task)
        self._pending.append(task)
        self.drain(block=False)
        return node

    def _save_entries(self, path: bytes, task: DirTask) -> None:
        try:
            with os.scandir(path) as it:
                entries = sorted((entry.name, entry.is_file(follow_symlinks=False)) for entry in it)
        except OSError as exc:
            self.counters.miss(
                path, f"cannot list directory: {describe_os_error(exc)}", self.progress
            )
            return
        # per regular file, the hottest loop of an incremental backup: kept short
        files: list[bytes] = []
        prefix, rel, root_dev = task.directory, task.rel, task.root_dev
        rules = self.options.rules
        excludes = rules.excludes_path if rules.patterns else None
        for name, is_file in entries:
            if is_file:
                if excludes is None or not excludes(rel + b"/" + name if rel else name, False):
                    files.append(name)
                continue
            parent_dir = task.parent_dir()
            parent = parent_dir.node(name) if parent_dir is not None else None
            child_rel = rel + b"/" + name if rel else name
            child = self.save_entry(prefix + name, child_rel, name, root_dev, parent)
            if child is not None:
                self._add_child(task, child)
        if self.options.force_read:  # missed last time: read whatever the lstat says
            force_read = self.options.force_read
            task.read_anyway = frozenset(name for name in files if prefix + name in force_read)
        self._batches.queue(task, files)

    def _add_child(self, task: DirTask, child: Child) -> None:
        task.children.append(child)
        self._batches.expect(task, 1)
        self._settle_when_done(task, child)

    def _settle_when_done(self, task: DirTask, child: Child | None) -> None:
        """The task stops waiting for ``child`` now, or when its read finishes."""
        pending = child.first if isinstance(child, _Linked) else child
        if isinstance(pending, Future):
            pending.add_done_callback(partial(_settle, self._batches, task))
        else:
            self._batches.settle(task)

    def save_entry(
        self, path: bytes, rel: bytes, name: bytes, root_dev: int, parent: Node | None
    ) -> Child | None:
        try:
            st = os.lstat(path)
            if self._excluded(rel, st):
                return None
            node = fsmeta.node_from_stat(name, st, path, read_xattrs=False)
            if self.options.read_xattrs:
                node.xattrs = self._xattrs(path, node, parent)
        except OSError as exc:
            self.counters.miss(path, describe_os_error(exc), self.progress)
            return None
        except RoostError as exc:
            self.counters.miss(path, str(exc), self.progress)
            return None
        if node.type == DIR:
            return self.save_dir(path, rel, node, root_dev, parent)
        if node.type == FILE:
            return self.save_file(path, node, parent)
        self.counters.add(other=1)
        return node

    @staticmethod
    def _xattrs(path: bytes, node: Node, parent: Node | None) -> list[tuple[bytes, bytes]]:
        if parent is not None and node.same_file_as(parent):
            return list(parent.xattrs)  # changing an xattr changes ctime: these are current
        return fsmeta.xattrs_of(path)

    def _excluded(self, rel: bytes, st: os.stat_result) -> bool:
        rules = self.options.rules
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and os.path.basename(rel).startswith(SNAPSHOT_PREFIX):
            return True  # a Roost btrfs snapshot of another job, living inside the subvolume
        if rules.excludes_path(rel, is_dir):
            return True
        return stat.S_ISREG(st.st_mode) and rules.excludes_size(st.st_size)

    # -- regular files through the batch scanners (filebatch.py) ------------------------

    def _apply_results(
        self,
        scanned: list[tuple[Slot, procreader.FileResult]],
        identical: int,
        identical_bytes: int,
    ) -> None:
        """Runs in a result thread: each file's outcome becomes its node (or None).

        Files identical to the parent's entries are only counted (their entries stand, see
        DirTask.reused). The common outcome, a file read whole, is inlined and tallied in
        locals: this loop runs in the main process for every file the workers read, and
        per-file tallies through ``count`` were a tenth of its Python time.
        """
        tally: dict[str, int] = {}
        stored = changed = sizes = read = 0
        for slot, result in scanned:
            if result.outcome == procreader.STORED and result.problem is None:
                sizes, read = sizes + result.size, read + result.bytes_read
                stored += 1
                changed += _stored_state(slot) == "changed"
                slot.child = result.entry  # the worker encoded the tree entry
            else:
                slot.child = self._apply_result(slot, result, tally)
        self.progress.files_done(identical + stored)  # the others: file_done, one by one
        self.progress.bytes_done(identical_bytes + read)
        count(tally, identical_bytes + sizes, bytes_read=read, files_unchanged=identical)
        count(tally, 0, files_new=stored - changed, files_changed=changed)
        self.counters.add(**tally)

    def _apply_result(
        self, slot: Slot, result: procreader.FileResult, tally: dict[str, int]
    ) -> object:
        node = result.node
        progress = self.progress
        parent = slot.parent()
        if result.outcome == procreader.UNCHANGED and node is not None and parent is not None:
            node.content, node.extents = list(parent.content), parent.extents
            node.xattrs = list(parent.xattrs)  # changing an xattr changes ctime: current
            count(tally, node.size, files_unchanged=1)
            progress.bytes_done(node.size)
            progress.file_done(slot.path, "unchanged")
            return node
        if result.outcome == procreader.EXCLUDED:
            return None
        count(tally, result.size, bytes_read=result.bytes_read)
        progress.bytes_done(result.bytes_read)
        if result.problem is not None:
            self.counters.miss(slot.path, result.problem, progress)
        if result.outcome != procreader.STORED:
            return None
        state = _stored_state(slot)
        count(tally, 0, **{f"files_{state}": 1})
        progress.file_done(slot.path, state)
        return result.entry  # the worker encoded the tree entry

    def _take_back(self) -> None:
        """Handle here the files the scanners handed back, and requeue what they left."""
        self._batches.requeue()
        for slot in self._batches.take_handed_back():
            slot.child = child = self._save_handed_back(slot)
            self._settle_when_done(slot.task, child)

    def _save_handed_back(self, slot: Slot) -> Child | None:
        try:
            is_dir = stat.S_ISDIR(os.lstat(slot.path).st_mode)
        except OSError as exc:
            self.counters.miss(slot.path, describe_os_error(exc), self.progress)
            return None
        if is_dir:  # listed as a file: its tree could no longer precede its parent's
            self.counters.miss(slot.path, "replaced by a directory during backup", self.progress)
            return None
        return self.save_entry(slot.path, slot.rel, slot.name, slot.root_dev, slot.parent())

    # -- files read in this process -----------------------------------------------------

    def save_file(self, path: bytes, node: Node, parent: Node | None) -> Child:
        key = (node.device, node.inode)
        if node.nlink > 1 and key in self._hardlinks:
            self.counters.add(bytes_total=node.size)
            return _Linked(node, self._hardlinks[key], path)
        if (
            parent is not None
            and node.same_file_as(parent)
            and (path not in self.options.force_read)
        ):
            node.content, node.extents = list(parent.content), parent.extents
            self._unchanged(path, node.size, bytes_total=node.size)
            child: Node | Future[Node | None] = node
        else:
            self.counters.add(bytes_total=node.size)
            child = self._submit_thread_read(path, node, "new" if parent is None else "changed")
        if node.nlink > 1:
            self._hardlinks[key] = child
        return child

    def _unchanged(self, path: bytes, size: int, bytes_total: int = 0) -> None:
        self.counters.add(files_unchanged=1, bytes_total=bytes_total)
        self.progress.bytes_done(size)
        self.progress.file_done(path, "unchanged")

    def _submit_thread_read(self, path: bytes, node: Node, state: str) -> Future[Node | None]:
        self._slots.acquire()
        future = self._pool.submit(self._read, path, node, state)
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def _read(self, path: bytes, node: Node, state: str) -> Node | None:
        self.progress.file_started(path, node.size)
        stored, problem = self.reader.read(path, node)
        if problem is not None:
            self.counters.miss(path, problem, self.progress)
        if not stored:
            return None
        self._count_stored(path, state)
        return node

    def _count_stored(self, path: bytes, state: str) -> None:
        self.counters.add(**{"files_new" if state == "new" else "files_changed": 1})
        self.progress.file_done(path, state)

    def _bytes_read(self, count: int) -> None:
        self.counters.add(bytes_read=count)
        self.progress.bytes_done(count)

    def save_entry_blocking(
        self,
        path: bytes,
        name: bytes,
        root_dev: int,
        parent: Node | None,
        into: list[Child],
    ) -> None:
        """Save one source root entry (a file or a whole directory) into ``into``."""
        child = self.save_entry(path, b"", name, root_dev, parent)
        if child is not None:
            into.append(child)

    def resolve_all(self, children: list[Child]) -> list[Node]:
        return [n for n in (self._resolve(child) for child in children) if n is not None]

    # -- post-order tree encoding -------------------------------------------------------

    def drain(self, block: bool) -> None:
        """Encode finished directories, oldest first (children always precede parents)."""
        self._batches.raise_failure()
        self._take_back()
        if not block:
            while self._pending and not self._pending[0].waiting:
                self._encode(self._pending.popleft())
            return
        while self._pending:
            head = self._pending[0]
            self._batches.flush(final=True)
            self._batches.wait_for(head)
            self._batches.raise_failure()
            self._take_back()
            if not head.waiting:
                self._encode(self._pending.popleft())

    def _encode(self, task: DirTask) -> None:
        # each child resolved exactly once: resolving a hardlink's later name counts it
        entries = [self._entry(child) for child in task.children]  # type: ignore[arg-type]
        if task.subtree is not None and self._same_as_parent(task, entries):
            task.node.subtree = task.subtree  # identical entries: identical tree blob
        else:
            tree = dirtree.encode(entries, task.reused, task.parent_dir())
            task.node.subtree, _ = self.saver.save(TREE_BLOB, tree)
        # slots point back at their task: without this, every directory's entries would wait
        # for the cyclic garbage collector (which cost a quarter of a no-change backup's time)
        task.forget()

    def _same_as_parent(self, task: DirTask, entries: list[Node | Slot | None]) -> bool:
        if task.tree is None or not self.saver.has_live(task.subtree):
            return False
        if not entries and task.parent_entries is not None:
            # only files, all of them identical: the scanners counted the parent's entries
            return len(task.reused) == task.parent_entries
        parent = task.parent_dir()
        return parent is not None and dirtree.same_as_parent(entries, len(task.reused), parent)

    def _entry(self, child: Child) -> Node | Slot | None:
        """The child's node, or its slot when a worker encoded its entry."""
        if isinstance(child, Slot) and isinstance(child.child, bytes):
            return child
        return self._resolve(child)

    def _resolve(self, child: Child) -> Node | None:
        if isinstance(child, Slot):
            assert not is_unset(child.child), "a directory was encoded before its files"
            if isinstance(child.child, bytes):
                return node_from_json(orjson.loads(child.child))
            return self._resolve(child.child)  # type: ignore[arg-type]
        if child is None or isinstance(child, Node):
            return child
        if isinstance(child, _Linked):
            first = child.first if isinstance(child.first, Node) else child.first.result()
            if first is None:  # the first name could not be read; try this one
                return self._read(child.path, child.node, "new")
            child.node.content, child.node.extents = list(first.content), first.extents
            self._unchanged(child.path, child.node.size)
            return child.node
        return child.result()


def _stored_state(slot: Slot) -> str:
    """A read file's state: "changed" when the parent snapshot had it, else "new"."""
    return "changed" if slot.parent_dir is not None and slot.name in slot.parent_dir else "new"


def _settle(batches: FileBatches, task: DirTask, _: Future[Node | None]) -> None:
    batches.settle(task)


__all__ = ["Child", "Walker"]

"""The archiver's walk: directories in order, files read in parallel, trees saved post-order.

The walking thread lists directories and stats entries; files that need reading go to a small
pool of reader threads (reads, BLAKE3 and zstd release the GIL, so several files proceed at
once). A directory's tree can only be encoded when all its children are known, so finished
directories wait in a FIFO in post-order (children before parents) and are encoded as soon as
their children's reads complete, without stopping the walk. Bounded: at most
``readers * 16`` files are queued for reading.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from roost.engine import fsmeta, procreader
from roost.engine.chunker import Chunker
from roost.engine.filereader import FileReader, describe_os_error
from roost.engine.filters import ExcludeRules
from roost.engine.pack import TREE_BLOB
from roost.engine.progress import BackupProgress
from roost.engine.repository import Repository
from roost.engine.tree import DIR, FILE, Node, encode_tree
from roost.engine.uploader import BlobSaver
from roost.errors import RoostError

SNAPSHOT_PREFIX = b".roost-snap-"


@dataclass
class _Linked:
    """A later name of a hardlinked inode: takes the content of the first name once known."""

    node: Node
    first: Node | Future[Node | None]
    path: bytes


Child = Node | Future[Node | None] | _Linked


@dataclass
class _DirTask:
    node: Node
    children: list[Child] = field(default_factory=list)
    parent_subtree: bytes | None = None
    parent_nodes: list[Node] = field(default_factory=list)


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
        self._pool = ThreadPoolExecutor(readers, thread_name_prefix="roost-reader")
        self._processes = processes
        self._worker_setup = procreader.WorkerSetup(
            repo.key.master, cfg.chunk_min, cfg.chunk_avg, cfg.chunk_max
        )
        self._process_pool: ProcessPoolExecutor | None = None
        self._batch: list[tuple[bytes, Node, str, Future[Node | None]]] = []
        self._batch_bytes = 0
        self._batch_slots = threading.BoundedSemaphore(max(1, processes) * 2)
        self._slots = threading.BoundedSemaphore(readers * 16)
        self._pending: deque[_DirTask] = deque()
        self._hardlinks: dict[tuple[int, int], Node | Future[Node | None]] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._process_pool is not None:
            self._process_pool.shutdown(wait=True, cancel_futures=True)

    # -- parent lookup ------------------------------------------------------------------

    def parent_children(self, subtree: bytes | None) -> dict[bytes, Node]:
        if subtree is None:
            return {}
        return {node.name: node for node in self.parent_nodes(subtree)}

    def parent_nodes(self, subtree: bytes) -> list[Node]:
        try:
            return self.repo.load_tree(subtree)
        except RoostError:
            return []  # an unreadable parent tree only costs re-reading

    # -- directories --------------------------------------------------------------------

    def save_dir(
        self, path: bytes, rel: bytes, node: Node, root_dev: int, parent: Node | None
    ) -> Node:
        self.counters.add(dirs=1)
        task = _DirTask(node)
        if not (self.options.rules.one_file_system and node.device != root_dev):
            if parent is not None and parent.type == DIR and parent.subtree is not None:
                task.parent_subtree = parent.subtree
                task.parent_nodes = self.parent_nodes(parent.subtree)
            old = {child.name: child for child in task.parent_nodes}
            self._save_entries(path, rel, root_dev, old, task)
        self._pending.append(task)
        self.drain(block=False)
        return node

    def _save_entries(
        self, path: bytes, rel: bytes, root_dev: int, old: dict[bytes, Node], task: _DirTask
    ) -> None:
        try:
            with os.scandir(path) as it:
                names = sorted(entry.name for entry in it)
        except OSError as exc:
            self.counters.miss(
                path, f"cannot list directory: {describe_os_error(exc)}", self.progress
            )
            return
        for name in names:
            child_rel = rel + b"/" + name if rel else name
            child = self.save_entry(
                os.path.join(path, name), child_rel, name, root_dev, old.get(name)
            )
            if child is not None:
                task.children.append(child)

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

    # -- files --------------------------------------------------------------------------

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
            self._unchanged(path, node, bytes_total=node.size)
            child: Node | Future[Node | None] = node
        else:
            self.counters.add(bytes_total=node.size)
            child = self._submit_read(path, node, "new" if parent is None else "changed")
        if node.nlink > 1:
            self._hardlinks[key] = child
        return child

    def _unchanged(self, path: bytes, node: Node, bytes_total: int = 0) -> None:
        self.counters.add(files_unchanged=1, bytes_total=bytes_total)
        self.progress.bytes_done(node.size)
        self.progress.file_done(path, "unchanged")

    def _submit_read(self, path: bytes, node: Node, state: str) -> Future[Node | None]:
        if self._processes and node.size <= procreader.MAX_FILE_SIZE:
            return self._queue_for_worker(path, node, state)
        return self._submit_thread_read(path, node, state)

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

    # -- worker processes (see procreader.py) ------------------------------------------

    def _queue_for_worker(self, path: bytes, node: Node, state: str) -> Future[Node | None]:
        future: Future[Node | None] = Future()
        self._batch.append((path, node, state, future))
        self._batch_bytes += node.size
        if len(self._batch) >= procreader.BATCH_FILES or (
            self._batch_bytes >= procreader.BATCH_BYTES
        ):
            self._flush_batch()
        return future

    def _flush_batch(self, final: bool = False) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if not batch:
            return
        if final and self._process_pool is None:
            for path, node, state, future in batch:  # too little to be worth starting workers
                _chain(self._submit_thread_read(path, node, state), future)
            return
        if self._process_pool is None:
            self._process_pool = procreader.start_pool(self._worker_setup, self._processes)
        self._batch_slots.acquire()
        for path, node, _, _ in batch:
            self.progress.file_started(path, node.size)
        work = self._process_pool.submit(
            procreader.read_batch, [(path, node) for path, node, _, _ in batch]
        )
        work.add_done_callback(lambda done: self._batch_done(done, batch))

    def _batch_done(
        self,
        done: Future[list[procreader.FileResult]],
        batch: list[tuple[bytes, Node, str, Future[Node | None]]],
    ) -> None:
        try:
            results = done.result()
            for (path, _, state, future), result in zip(batch, results, strict=True):
                future.set_result(self._apply_result(path, state, result))
        except BaseException as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._batch_slots.release()

    def _apply_result(self, path: bytes, state: str, result: procreader.FileResult) -> Node | None:
        for blob in result.blobs:
            self.saver.add_sealed(
                blob.type, blob.id, blob.sealed, blob.raw_length, blob.compression
            )
        self._bytes_read(result.bytes_read)
        if result.problem is not None:
            self.counters.miss(path, result.problem, self.progress)
        if not result.stored:
            return None
        self._count_stored(path, state)
        return result.node

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
        if block:
            self._flush_batch(final=True)
        while self._pending and (block or _ready(self._pending[0])):
            self._encode(self._pending.popleft())

    def _encode(self, task: _DirTask) -> None:
        nodes = self.resolve_all(task.children)
        unchanged = task.parent_subtree is not None and nodes == task.parent_nodes
        if unchanged and self.saver.has_live(task.parent_subtree):
            task.node.subtree = task.parent_subtree  # identical entries: identical tree blob
            return
        task.node.subtree, _ = self.saver.save(TREE_BLOB, encode_tree(nodes))

    def _resolve(self, child: Child) -> Node | None:
        if isinstance(child, Node):
            return child
        if isinstance(child, _Linked):
            first = child.first if isinstance(child.first, Node) else self._wait(child.first)
            if first is None:  # the first name could not be read; try this one
                return self._read(child.path, child.node, "new")
            child.node.content, child.node.extents = list(first.content), first.extents
            self._unchanged(child.path, child.node)
            return child.node
        return self._wait(child)

    def _wait(self, future: Future[Node | None]) -> Node | None:
        if not future.done():
            self._flush_batch()  # it may sit in the batch not yet handed to a worker
        return future.result()


def _chain(source: Future[Node | None], target: Future[Node | None]) -> None:
    def copy(done: Future[Node | None]) -> None:
        exc = done.exception()
        if exc is not None:
            target.set_exception(exc)
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)


def _ready(task: _DirTask) -> bool:
    for child in task.children:
        pending = child.first if isinstance(child, _Linked) else child
        if isinstance(pending, Future) and not pending.done():
            return False
    return True


@dataclass(frozen=True)
class WalkSettings:
    rules: ExcludeRules
    read_xattrs: bool
    force_read: frozenset[bytes]


class Counters:
    """Thread-safe tallies shared by the walker and the reader threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {}
        self.missed: list[dict[str, str]] = []

    def add(self, **amounts: int) -> None:
        with self._lock:
            for key, amount in amounts.items():
                self.values[key] = self.values.get(key, 0) + amount

    def miss(self, path: bytes, reason: str, progress: BackupProgress) -> None:
        with self._lock:
            self.values["files_missed"] = self.values.get("files_missed", 0) + 1
            self.missed.append({"path": os.fsdecode(path), "reason": reason})
        progress.missed(path, reason)


__all__ = ["Child", "Counters", "WalkSettings", "Walker"]

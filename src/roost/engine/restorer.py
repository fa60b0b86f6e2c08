"""Restore: recreate a snapshot's tree (or selected paths) under a target directory.

Safety rules, because a snapshot is input we do not trust blindly:
- a name that is empty, ``.``, ``..`` or contains ``/`` or NUL is refused with a warning;
- nothing is written through a symlink that exists in the target: before descending into a
  directory it is lstat'ed, and files are created with ``O_NOFOLLOW | O_EXCL``;
- every chunk is verified against its keyed id as it is read (Repository.read_blob).

Order: directories are created first, files written by a thread pool, and directory metadata
applied last, deepest first, because writing into a directory changes its mtime.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from threading import Lock

from roost.engine import fsmeta
from roost.engine.progress import RestoreProgress
from roost.engine.repository import Repository
from roost.engine.snapshot import Snapshot
from roost.engine.tree import DIR, FILE, SOCKET, SYMLINK, Node
from roost.errors import RestoreTargetError, RoostError, UsageError

CONFLICT_POLICIES = ("overwrite", "skip", "rename", "if-newer")


@dataclass
class RestoreSummary:
    files: int = 0
    dirs: int = 0
    other: int = 0
    bytes_written: int = 0
    skipped: int = 0
    renamed: int = 0
    warnings: list[str] = field(default_factory=list)


def _split(path: str) -> list[bytes]:
    return [p for p in os.fsencode(path).split(b"/") if p and p != b"."]


def _safe_name(name: bytes) -> bool:
    return bool(name) and name not in (b".", b"..") and b"/" not in name and b"\0" not in name


class Restorer:
    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot,
        target: str | bytes,
        *,
        includes: list[str] | None = None,
        conflict: str = "overwrite",
        progress: RestoreProgress | None = None,
        workers: int = 2,
    ) -> None:
        if conflict not in CONFLICT_POLICIES:
            raise UsageError(f"--conflict must be one of {', '.join(CONFLICT_POLICIES)}")
        self.repo = repo
        self.snapshot = snapshot
        self.target = os.path.abspath(os.fsencode(target))
        self.includes = [_split(p) for p in includes or []]
        self.conflict = conflict
        self.progress = progress or RestoreProgress()
        self.summary = RestoreSummary()
        self._lock = Lock()
        self._links: dict[tuple[int, int], bytes] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roost-restore")
        # bounded: a million small files must not become a million queued work items
        self._slots = threading.BoundedSemaphore(workers * 8)
        self._failure: BaseException | None = None
        self._dirs: list[tuple[bytes, Node]] = []
        self._pending_links: list[tuple[bytes, bytes, Node]] = []
        self._failed: set[bytes] = set()
        self._matched = 0

    # -- selection ----------------------------------------------------------------------

    def _selected(self, parts: list[bytes]) -> tuple[bool, bool]:
        """(restore this entry, descend into it) for the path given as components."""
        if not self.includes:
            return True, True
        for inc in self.includes:
            if parts[: len(inc)] == inc:
                return True, True  # inside an included path
            if inc[: len(parts)] == parts:
                return True, True  # an ancestor of an included path
        return False, False

    def _is_inside_include(self, parts: list[bytes]) -> bool:
        return not self.includes or any(parts[: len(inc)] == inc for inc in self.includes)

    # -- driver -------------------------------------------------------------------------

    def run(self) -> RestoreSummary:
        self._prepare_target()
        try:
            self._restore_tree(self.snapshot.tree, self.target, [])
            self._pool.shutdown(wait=True)
            if self._failure is not None:
                raise self._failure
            self._make_links()
        finally:
            self._pool.shutdown(wait=True)
        for path, node in reversed(self._dirs):
            self._apply(path, node)
        if self.includes and not self._matched:
            raise UsageError("no path in the snapshot matches the given --include paths")
        return self.summary

    def _prepare_target(self) -> None:
        try:
            os.makedirs(self.target, exist_ok=True)
        except OSError as exc:
            raise RestoreTargetError(
                f"cannot create restore target {os.fsdecode(self.target)}: {exc.strerror}"
            ) from None
        st = os.stat(self.target)
        if not stat.S_ISDIR(st.st_mode):
            raise RestoreTargetError(
                f"restore target {os.fsdecode(self.target)} is not a directory"
            )
        if not os.access(self.target, os.W_OK | os.X_OK):
            raise RestoreTargetError(
                f"restore target {os.fsdecode(self.target)} is not writable; choose another "
                "--target or fix its permissions"
            )

    def _warn(self, path: bytes, message: str) -> None:
        with self._lock:
            self.summary.warnings.append(f"{os.fsdecode(path)}: {message}")
        self.progress.warning(path, message)

    def _restore_tree(self, tree_id: bytes, dir_path: bytes, parts: list[bytes]) -> None:
        for node in self.repo.load_tree(tree_id):
            child_parts = [*parts, node.name]
            if not _safe_name(node.name):
                self._warn(dir_path, f"refused unsafe name {node.name!r} in the snapshot")
                continue
            wanted, _descend = self._selected(child_parts)
            if not wanted:
                continue
            path = os.path.join(dir_path, node.name)
            if self._is_inside_include(child_parts):
                self._matched += 1
            if node.type == DIR:
                self._restore_dir(node, path, child_parts)
            elif self._is_inside_include(child_parts):
                self._restore_leaf(node, path)

    def _restore_dir(self, node: Node, path: bytes, parts: list[bytes]) -> None:
        if not self._ensure_dir(path):
            return
        if self._is_inside_include(parts):
            self.summary.dirs += 1
            self._dirs.append((path, node))
        if node.subtree is not None:
            self._restore_tree(node.subtree, path, parts)

    def _ensure_dir(self, path: bytes) -> bool:
        try:
            return self._make_dir(path)
        except OSError as exc:
            self._warn(path, f"cannot create directory: {exc.strerror}; skipped with its contents")
            self.summary.skipped += 1
            return False

    def _make_dir(self, path: bytes) -> bool:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
            return True
        if stat.S_ISDIR(st.st_mode):
            return True
        if self.conflict == "overwrite":
            os.unlink(path)  # a file or symlink where the snapshot has a directory
            os.mkdir(path, 0o700)
            return True
        self._warn(path, "exists and is not a directory; skipped with its contents")
        self.summary.skipped += 1
        return False

    # -- leaves -------------------------------------------------------------------------

    def _restore_leaf(self, node: Node, path: bytes) -> None:
        if node.type == SOCKET:
            self.summary.other += 1
            return  # sockets belong to a running process; recreating one is meaningless
        final = self._resolve_conflict(path, node)
        if final is None:
            return
        if node.type == FILE:
            first = self._links.get((node.device, node.inode)) if node.nlink > 1 else None
            if first is not None:
                self._pending_links.append((first, final, node))
            else:
                if node.nlink > 1:
                    self._links[(node.device, node.inode)] = final
                self._submit(node, final)
            return
        try:
            if node.type == SYMLINK:
                fsmeta.create_symlink(final, node)
            else:
                fsmeta.create_special(final, node)
        except OSError as exc:
            self._warn(final, f"cannot create {node.type}: {exc.strerror}")
            return
        self.summary.other += 1
        self._apply(final, node)

    def _resolve_conflict(self, path: bytes, node: Node) -> bytes | None:
        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            return path
        if stat.S_ISDIR(existing.st_mode):
            self._warn(path, "a directory exists where the snapshot has a file; skipped")
            self.summary.skipped += 1
            return None
        policy = self.conflict
        if policy == "if-newer":
            policy = "overwrite" if node.mtime_ns > existing.st_mtime_ns else "skip"
        if policy == "skip":
            self.summary.skipped += 1
            return None
        if policy == "rename":
            self.summary.renamed += 1
            return _free_name(path)
        os.unlink(path)
        return path

    def _submit(self, node: Node, path: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        self._slots.acquire()
        future = self._pool.submit(self._restore_file, node, path)
        future.add_done_callback(self._file_finished)

    def _file_finished(self, future: Future[None]) -> None:
        self._slots.release()
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()

    def _restore_file(self, node: Node, path: bytes) -> None:
        try:
            self._write_file(node, path)
        except (RoostError, OSError) as exc:
            message = str(exc) if isinstance(exc, RoostError) else f"cannot write: {exc.strerror}"
            self._warn(path, f"{message}; the file was not restored")
            with self._lock:
                self._failed.add(path)
            with contextlib.suppress(OSError):
                os.unlink(path)  # never leave a truncated file that looks restored
            return
        with self._lock:
            self.summary.files += 1
        self._apply(path, node)

    def _make_links(self) -> None:
        """Link later names of a hardlinked inode to the first one restored (all written now)."""
        for first, path, node in self._pending_links:
            if first in self._failed:
                self._restore_file(node, path)
                continue
            try:
                os.link(first, path, follow_symlinks=False)
            except OSError:
                self._restore_file(node, path)  # the first copy failed or was skipped
                continue
            with self._lock:
                self.summary.files += 1

    def _write_file(self, node: Node, path: bytes) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            writer = _ExtentWriter(fd, node.extents)
            for chunk_id in node.content:
                data = self.repo.read_blob(chunk_id)
                writer.write(data)
                with self._lock:
                    self.summary.bytes_written += len(data)
                self.progress.bytes_done(len(data))
            os.ftruncate(fd, node.size)  # recreates trailing holes, too
        finally:
            os.close(fd)
        self.progress.file_done(path)

    def _apply(self, path: bytes, node: Node) -> None:
        for warning in fsmeta.apply_metadata(path, node):
            self._warn(path, warning)


class _ExtentWriter:
    """Writes a file's content stream back to back, or into its data extents if sparse."""

    def __init__(self, fd: int, extents: list[tuple[int, int]] | None) -> None:
        self._fd = fd
        self._extents = list(extents) if extents is not None else None
        self._offset = 0  # next write position for a dense file
        self._index = 0

    def write(self, data: bytes) -> None:
        if self._extents is None:
            os.pwrite(self._fd, data, self._offset)
            self._offset += len(data)
            return
        view = memoryview(data)
        while view:
            if self._index >= len(self._extents):
                raise RoostError("file content is longer than its recorded data extents")
            start, length = self._extents[self._index]
            take = min(len(view), length - self._offset)
            os.pwrite(self._fd, view[:take], start + self._offset)
            view = view[take:]
            self._offset += take
            if self._offset == length:
                self._index, self._offset = self._index + 1, 0


def _free_name(path: bytes) -> bytes:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = path + f".restored-{stamp}".encode()
    counter = 1
    while os.path.lexists(candidate):
        counter += 1
        candidate = path + f".restored-{stamp}-{counter}".encode()
    return candidate

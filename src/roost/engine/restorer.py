"""Restore: recreate a snapshot's tree (or selected paths) under a target directory.

Safety rules, because a snapshot is input we do not trust blindly:
- a name that is empty, ``.``, ``..`` or contains ``/`` or NUL is refused with a warning;
- nothing is written through a symlink that exists in the target: before descending into an
  existing directory it is lstat'ed, and files are created with ``O_NOFOLLOW | O_EXCL``;
- every chunk is verified against its keyed id as it is read.

Order: directories are created first (by the walking thread), regular files written in
batches by threads or worker processes (restore_dispatch.py, restore_batch.py), and directory
metadata applied last, deepest first, because writing into a directory changes its mtime.

A directory this restore created itself ("fresh") cannot hold anything of the user's, so its
entries skip the conflict check (an ``lstat`` per file): ``O_EXCL`` still refuses a name that
appeared meanwhile, and such a file then goes through the conflict policy like any other.

The regular files of a fresh directory are the bulk of a restore, so they take a short path:
their batch entries are built straight from the tree's JSON documents (no :class:`Node`
unless a file has to be redone), and where the directory shows that new files get exactly
this process's owner and ``mode & ~umask`` (``plaincreate.creates_plainly``; the directory is then
"plain", and so is every directory made in it), a file whose owner is already right is
created with its final mode, and neither ``fchown`` nor ``fchmod`` is called for it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import os
import stat
from dataclasses import dataclass, field
from typing import Any

import orjson

from roost.engine import fsmeta, plaincreate, restore_conflict, workerproc
from roost.engine.progress import RestoreProgress
from roost.engine.repository import Repository
from roost.engine.restore_batch import (
    EXISTS,
    FAILED,
    OK,
    RETRY,
    ExtentWriter,
    FileOutcome,
)
from roost.engine.restore_conflict import CONFLICT_POLICIES
from roost.engine.restore_dispatch import Batch, BatchDispatcher
from roost.engine.restore_jobs import JobBuilder, QuickFile, quick_file
from roost.engine.snapshot import Snapshot
from roost.engine.tree import DIR, FILE, SOCKET, SYMLINK, TREE_VERSION, Node, node_from_json
from roost.errors import (
    CorruptObject,
    RestoreTargetError,
    RoostError,
    UnsupportedFormat,
    UsageError,
)
from roost.memory import fewer_collections

# what a batch remembers of each file: its node, or the document it came from
Entry = Node | dict[str, Any]


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
        processes: int | None = None,
    ) -> None:
        """``workers`` threads write batches until the restore is big enough for
        ``processes`` worker processes (default: one per core; 0: threads only)."""
        if conflict not in CONFLICT_POLICIES:
            raise UsageError(f"--conflict must be one of {', '.join(CONFLICT_POLICIES)}")
        self.repo = repo
        self.snapshot = snapshot
        self.target = os.path.abspath(os.fsencode(target))
        self.includes = [_split(p) for p in includes or []]
        self.conflict = conflict
        self.progress = progress or RestoreProgress()
        self.summary = RestoreSummary()
        self._links: dict[tuple[int, int], bytes] = {}
        procs = workerproc.default_processes() if processes is None else processes
        self._batches = BatchDispatcher(repo, workers, procs, self._account_batch)
        self._creator = plaincreate.creator()
        self._jobs_for = JobBuilder(repo, self._creator)
        self._fs_types = functools.cache(plaincreate.filesystem_type)  # for this restore only
        self._dirs: list[tuple[bytes, Node]] = []
        self._pending_links: list[tuple[bytes, bytes, Node, bool]] = []
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
        _ = self.repo.index  # loaded now, so that the collector can leave it alone
        # The cyclic collector walked every live object (the index: ~100k tuples) again and
        # again while the walk allocated nodes (perf: ~12 % of the main process's samples).
        # Someone else's freeze (the command line freezes its imports) is not ours to undo.
        thaw = gc.get_freeze_count() == 0
        gc.freeze()
        try:
            # batches in flight keep thousands of young documents and tuples alive: with
            # the default threshold the collector went over them ~600 times per kernel-tree
            # restore (0.2 s of the main process's 1.8 s of CPU)
            with fewer_collections():
                self._restore_tree(self.snapshot.tree, self.target, [], False, False)
                self._batches.flush()
                while self._batches.busy():
                    self._batches.collect()
                self._make_links()
        finally:
            self._batches.shutdown()
            if thaw:
                gc.unfreeze()
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
        self.summary.warnings.append(f"{os.fsdecode(path)}: {message}")
        self.progress.warning(path, message)

    def _restore_tree(
        self, tree_id: bytes, dir_path: bytes, parts: list[bytes], fresh: bool, plain: bool
    ) -> None:
        # in a fresh directory whose every entry is selected, regular files take the short
        # path (module docstring); everything else is a Node as before
        quick = fresh and self._is_inside_include(parts)
        prefix = dir_path if dir_path.endswith(b"/") else dir_path + b"/"
        for entry in self._entries(tree_id, quick):
            if isinstance(entry, tuple):
                if not _safe_name(entry[0]):
                    self._warn(dir_path, f"refused unsafe name {entry[0]!r} in the snapshot")
                    continue
                self._matched += 1
                self._submit_quick(entry, prefix + entry[0], plain)
                continue
            node = entry
            child_parts = [*parts, node.name]
            if not _safe_name(node.name):
                self._warn(dir_path, f"refused unsafe name {node.name!r} in the snapshot")
                continue
            wanted, _descend = self._selected(child_parts)
            if not wanted:
                continue
            path = os.path.join(dir_path, node.name)
            inside = self._is_inside_include(child_parts)
            if inside:
                self._matched += 1
            if node.type == DIR:
                self._restore_dir(node, path, child_parts, inside, plain)
            elif inside:
                self._restore_leaf(node, path, fresh, plain)

    def _entries(self, tree_id: bytes, quick: bool) -> list[Node | QuickFile]:
        """The tree's entries; with ``quick``, plain regular files as :data:`QuickFile`.

        A malformed tree fails as a whole before any of its entries is restored, as
        :func:`roost.engine.tree.decode_tree` makes it.
        """
        if not quick:
            return list(self.repo.load_tree(tree_id))
        try:
            body = orjson.loads(self.repo.read_blob(tree_id))
            version = body["v"]
            if version != TREE_VERSION:
                raise UnsupportedFormat(f"tree version {version} is newer than this Roost")
            return [quick_file(doc) or node_from_json(doc) for doc in body["nodes"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObject("a tree blob is malformed") from exc

    def _restore_dir(
        self, node: Node, path: bytes, parts: list[bytes], inside: bool, plain: bool
    ) -> None:
        made = self._ensure_dir(path)
        if made is None:
            return
        if inside:
            self.summary.dirs += 1
            self._dirs.append((path, node))
        if node.subtree is not None:
            # made in a plain directory, it is plain too (it inherits nothing else); made
            # elsewhere, it shows what it inherited
            plain = made and (plain or self._plain(path))
            self._restore_tree(node.subtree, path, parts, made, plain)

    def _plain(self, path: bytes) -> bool:
        made_by = self._creator
        return made_by is not None and plaincreate.creates_plainly(path, made_by, self._fs_types)

    def _ensure_dir(self, path: bytes) -> bool | None:
        """True: created now (fresh); False: it existed; None: not usable (warned)."""
        try:
            return self._make_dir(path)
        except OSError as exc:
            self._warn(path, f"cannot create directory: {exc.strerror}; skipped with its contents")
            self.summary.skipped += 1
            return None

    def _make_dir(self, path: bytes) -> bool | None:
        try:
            os.mkdir(path, plaincreate.DIR_PROBE_MODE)
            return True
        except FileExistsError:
            pass
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            return False
        if self.conflict == "overwrite":
            os.unlink(path)  # a file or symlink where the snapshot has a directory
            os.mkdir(path, plaincreate.DIR_PROBE_MODE)
            return True
        self._warn(path, "exists and is not a directory; skipped with its contents")
        self.summary.skipped += 1
        return None

    # -- leaves -------------------------------------------------------------------------

    def _restore_leaf(self, node: Node, path: bytes, fresh: bool, plain: bool) -> None:
        if node.type == SOCKET:
            self.summary.other += 1
            return  # sockets belong to a running process; recreating one is meaningless
        final = path if fresh and node.type == FILE else self._resolve_conflict(path, node)
        if final is None:
            return
        if node.type == FILE:
            first = self._links.get((node.device, node.inode)) if node.nlink > 1 else None
            if first is not None:
                self._pending_links.append((first, final, node, fresh))
            else:
                if node.nlink > 1:
                    self._links[(node.device, node.inode)] = final
                self._submit(node, final, plain and final == path)
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
        final, resolution = restore_conflict.resolve(path, node.mtime_ns, self.conflict)
        if resolution == "directory":
            self._warn(path, "a directory exists where the snapshot has a file; skipped")
        if resolution in ("directory", "skipped"):
            self.summary.skipped += 1
        elif resolution == "renamed":
            self.summary.renamed += 1
        return final

    # -- batches of regular files -------------------------------------------------------

    def _submit(self, node: Node, path: bytes, plain: bool) -> None:
        job = self._jobs_for.job(node, path, plain)
        if job is None:  # a chunk in no index: the robust path reports it
            self._restore_file(node, path)
        else:
            self._batches.add(job, node)

    def _submit_quick(self, quick: QuickFile, path: bytes, plain: bool) -> None:
        """:meth:`_submit` for a file of a fresh directory, from its tree document."""
        job = self._jobs_for.quick_job(quick, path, plain)
        if job is None:
            self._restore_file(node_from_json(quick[-1]), path)
        else:
            self._batches.add(job, quick[-1])

    def _account_batch(self, batch: Batch, outcomes: list[FileOutcome]) -> None:
        for job, entry, outcome in zip(*batch, outcomes, strict=True):
            self._account(job[0], entry, outcome)

    def _account(self, path: bytes, entry: Entry, outcome: FileOutcome) -> None:
        status, written, messages = outcome
        if status == OK:
            self.summary.files += 1
            self.summary.bytes_written += written
            self.progress.bytes_done(written)
            self.progress.file_done(path)
            for message in messages:
                self._warn(path, message)
            return
        if status == FAILED:
            self._warn(path, f"{messages[0]}; the file was not restored")
            self._failed.add(path)
            return
        node = entry if isinstance(entry, Node) else node_from_json(entry)
        if status == RETRY:
            self._restore_file(node, path)  # every copy of every chunk, index reload
        elif status == EXISTS:
            final = self._resolve_conflict(path, node)
            if final is None:
                self._failed.add(path)  # later hard links must not point at that file
                return
            if node.nlink > 1 and self._links.get((node.device, node.inode)) == path:
                self._links[(node.device, node.inode)] = final
            self._restore_file(node, final)

    # -- one file on the robust path ----------------------------------------------------

    def _restore_file(self, node: Node, path: bytes) -> None:
        try:
            self._write_file(node, path)
        except (RoostError, OSError) as exc:
            message = str(exc) if isinstance(exc, RoostError) else f"cannot write: {exc.strerror}"
            self._warn(path, f"{message}; the file was not restored")
            self._failed.add(path)
            if not (isinstance(exc, OSError) and exc.errno == errno.EEXIST):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # never leave a truncated file that looks restored
            return
        self.summary.files += 1
        self._apply(path, node)

    def _make_links(self) -> None:
        """Link later names of a hardlinked inode to the first one restored (all written now)."""
        for first, path, node, fresh in self._pending_links:
            final: bytes | None = path
            if fresh and os.path.lexists(path):  # appeared in a directory we created
                final = self._resolve_conflict(path, node)
            if final is None:
                continue
            if first not in self._failed:
                try:
                    os.link(first, final, follow_symlinks=False)
                except OSError:
                    pass  # the first copy was skipped or removed: write this one
                else:
                    self.summary.files += 1
                    continue
            self._restore_file(node, final)

    def _write_file(self, node: Node, path: bytes) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            writer = ExtentWriter(fd, node.extents)
            for chunk_id in node.content:
                data = self.repo.read_blob(chunk_id)
                writer.write(data)
                self.summary.bytes_written += len(data)
                self.progress.bytes_done(len(data))
            os.ftruncate(fd, node.size)  # recreates trailing holes, too
        finally:
            os.close(fd)
        self.progress.file_done(path)

    def _apply(self, path: bytes, node: Node) -> None:
        for warning in fsmeta.apply_metadata(path, node):
            self._warn(path, warning)

"""Reading one file into chunks: open safely, detect sparse extents, chunk, detect changes.

Runs in the archiver's reader threads. Per-file problems are returned as a reason string (a
*missed file*), never raised; only repository/storage failures propagate.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import Protocol

from roost.engine import fsmeta
from roost.engine.chunker import Chunker, ExtentReader
from roost.engine.pack import DATA_BLOB
from roost.engine.tree import Node


class BlobSink(Protocol):
    """Where FileReader puts chunks: the BlobSaver, or a worker process's sealer."""

    def save(
        self,
        blob_type: int,
        data: bytes | memoryview,
        blob_id: bytes | None = None,
        *,
        inline: bool = False,
    ) -> tuple[bytes, bool]:
        """Store a blob (or find it stored); a view is valid only during the call."""
        ...


_NOATIME = getattr(os, "O_NOATIME", 0)
_NOCTTY = getattr(os, "O_NOCTTY", 0)
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "vanished during backup",
    errno.EIO: "I/O error",
    errno.EBUSY: "locked by another process",
    errno.ETXTBSY: "locked by another process",
    errno.ELOOP: "replaced by a symlink during backup",
}
CHANGED = "changed while being read"


def describe_os_error(exc: OSError) -> str:
    return _REASONS.get(exc.errno or 0, exc.strerror or str(exc))


class FileReader:
    """Reads files into blobs; ``on_bytes`` is called with each amount read."""

    def __init__(self, saver: BlobSink, chunker: Chunker, on_bytes: Callable[[int], None]):
        self.saver = saver
        self.chunker = chunker
        self.on_bytes = on_bytes

    def read(
        self, path: bytes, node: Node, known: os.stat_result | None = None
    ) -> tuple[bool, str | None]:
        """Fill ``node.content``; return (stored, problem). stored=False means missed.

        ``known`` is the ``lstat`` the caller just made of a regular file: it then stands for
        the ``fstat`` after opening (one system call less per file), and the ``fstat`` after
        reading must find the same regular file unchanged.
        """
        try:
            fd = open_for_reading(path)
        except OSError as exc:
            return False, describe_os_error(exc)
        try:
            return self.read_open(fd, node, known)
        finally:
            os.close(fd)

    def read_open(
        self, fd: int, node: Node, known: os.stat_result | None = None
    ) -> tuple[bool, str | None]:
        """:meth:`read` of a file the caller opened (with :func:`open_for_reading`)."""
        try:
            return self._read_open(fd, node, known)
        except OSError as exc:
            return False, describe_os_error(exc)

    def _read_open(
        self, fd: int, node: Node, known: os.stat_result | None
    ) -> tuple[bool, str | None]:
        before = os.fstat(fd) if known is None else known
        if not stat.S_ISREG(before.st_mode):
            return False, "replaced by a non-file during backup"
        if known is None:
            _refresh_from_stat(node, before)
        extents = None
        if fsmeta.is_sparse_candidate(before):
            extents = fsmeta.data_extents(fd, before.st_size)
        node.extents = extents
        expected = sum(n for _, n in extents) if extents is not None else before.st_size
        node.content, got = self._chunk(fd, extents or [(0, before.st_size)], expected)
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):
            return False, "replaced by a non-file during backup"
        if got != expected or _changed(before, after):
            return True, CHANGED
        return True, None

    def _chunk(
        self, fd: int, extents: list[tuple[int, int]], expected: int
    ) -> tuple[list[bytes], int]:
        if expected <= self.chunker.min_size and len(extents) <= 1:
            start = extents[0][0] if extents else 0
            data = os.pread(fd, expected, start) if expected else b""
            self.on_bytes(len(data))
            # one small blob: compress it right here, this thread is one of several readers
            return ([self.saver.save(DATA_BLOB, data, inline=True)[0]] if data else []), len(data)
        reader = ExtentReader(fd, extents)
        content = []
        for chunk in self.chunker.chunks(reader):
            content.append(self.saver.save(DATA_BLOB, chunk)[0])
            self.on_bytes(len(chunk))
        return content, reader.bytes_read


def open_for_reading(path: bytes) -> int:
    """Open a file listed as regular, without following a symlink that took its place.

    O_NONBLOCK: if a FIFO took the file's place since it was listed, do not wait for a
    writer (the fstat then reports it; reading a regular file ignores the flag), and
    O_NOCTTY: a terminal that took it does not become this process's.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | _NOCTTY
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
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns, before.st_ino) != (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
        after.st_ino,
    )

"""Spool files: unnamed temp files that hold an object on disk until it is stored.

A pack (16 MiB) is written to a spool file as it fills instead of being held in memory, and is
then stored from the file with ``Backend.put_file``. A spool file has no name wherever the
system allows it (Linux ``O_TMPFILE``; elsewhere a temp file unlinked at once, or deleted on
close on Windows), so a crash leaves nothing behind: the kernel frees the file with its last
descriptor. A local repository publishes such a file under its final name with a hard link
instead of copying it, which is why spool files go where ``Backend.spool_dir`` says (the
repository's own directory, same file system); otherwise into the system's temp directory
(``TMPDIR``).

The helpers below read a file being stored with a bounded buffer, from its start: a retried
store reads it again from the beginning.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from roost.errors import StorageError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

COPY_CHUNK = 1024 * 1024  # the buffer a spool file is copied or sent with
SPOOL_MODE = 0o600  # as the local backend's objects (both are subject to the umask)
# A named fallback spool file exists under this name only until it is unlinked, a moment
# after it is created; it starts with local.TEMP_PREFIX, so list() never shows it.
SPOOL_PREFIX = ".tmp-spool-"
# linkat failures meaning "this file cannot be linked here" rather than a storage fault:
# not an O_TMPFILE file (ENOENT), another file system, no /proc, a file system without links.
_CANNOT_LINK = frozenset(
    {errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
)
_PROC_FD = Path("/proc/self/fd")


def open_spool(directory: str | None = None) -> BinaryIO:
    """A new empty read-write file without a name, in ``directory`` (default: TMPDIR)."""
    where = directory or tempfile.gettempdir()
    fd = _open_unnamed(where)
    if fd is None:
        return tempfile.TemporaryFile(dir=where, prefix=SPOOL_PREFIX)
    return os.fdopen(fd, "w+b")


def can_spool_unnamed(directory: Path) -> bool:
    """Whether ``directory`` takes O_TMPFILE files that :func:`link_unnamed` can name."""
    fd = _open_unnamed(str(directory))
    if fd is None:
        return False
    os.close(fd)
    return _PROC_FD.is_dir()


def _open_unnamed(directory: str) -> int | None:
    flag = getattr(os, "O_TMPFILE", 0)  # Linux only
    if not flag:
        return None
    try:
        # no O_EXCL: that would forbid giving the file a name later (link_unnamed)
        return os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, SPOOL_MODE)
    except OSError:
        return None  # the file system cannot (NFS, old kernels, a missing directory)


def is_unnamed(file: BinaryIO) -> bool:
    """Whether ``file`` is a file with no name (so nobody else can change it)."""
    try:
        return os.fstat(file.fileno()).st_nlink == 0
    except (OSError, ValueError):  # no descriptor (io.BytesIO raises UnsupportedOperation)
        return False


def link_unnamed(file: BinaryIO, directory: Path, name: str) -> bool:
    """Name the unnamed ``file`` ``directory/name``; FileExistsError if that name is taken.

    False when the file cannot be linked there; the caller copies it instead. The data must
    be on disk already (fsynced) if the name is to survive a crash.
    """
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names an O_TMPFILE file without
        # privileges; a dir fd makes os.link use linkat (plain link() would not follow).
        os.link(_PROC_FD / str(file.fileno()), name, dst_dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _CANNOT_LINK:
            return False
        raise
    finally:
        os.close(dir_fd)
    return True


def check_size(file: BinaryIO, size: int) -> None:
    """put_file's contract: ``file`` holds exactly the object, ``size`` bytes."""
    end = file.seek(0, os.SEEK_END)
    if end != size:
        raise ValueError(f"the file to store holds {end} bytes, not the {size} announced")
    file.seek(0)


def pieces(file: BinaryIO, size: int, chunk: int = COPY_CHUNK) -> Iterator[bytes]:
    """The ``size`` bytes of ``file`` from its start, at most ``chunk`` bytes at a time."""
    file.seek(0)
    left = size
    while left:
        piece = file.read(min(chunk, left))
        if not piece:
            raise StorageError("the file being stored is shorter than announced")
        left -= len(piece)
        yield piece


def read_whole(file: BinaryIO, size: int) -> bytes:
    """The whole object held in ``file`` (for backends that keep objects in memory)."""
    file.seek(0)
    data = file.read(size)
    if len(data) != size:
        raise StorageError("the file being stored is shorter than announced")
    return data


def copy_into(file: BinaryIO, size: int, out: BinaryIO) -> None:
    for piece in pieces(file, size):
        out.write(piece)


def own_reader(file: BinaryIO, size: int) -> BinaryIO:
    """A file of its own with the content of ``file``, still readable once that is closed.

    It reads the same file through a duplicate descriptor at a position of its own (pread),
    so nobody's seeks and reads disturb anybody else's; without pread (Windows) or a
    descriptor (io.BytesIO) it is a copy in a new spool file.
    """
    try:
        fd = file.fileno()
    except (OSError, ValueError):
        fd = -1
    if fd >= 0 and hasattr(os, "pread"):
        return io.BufferedReader(_PositionalReader(os.dup(fd)), COPY_CHUNK)
    own = open_spool()
    copy_into(file, size, own)
    own.seek(0)
    return own


class _PositionalReader(io.RawIOBase):
    """Reads a descriptor with pread at a position of its own (a dup shares the position)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos}.get(whence)
        position = (os.fstat(self._fd).st_size if base is None else base) + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._pos = position
        return position

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fd, len(view), self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

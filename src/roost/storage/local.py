"""A repository in a local (or mounted) directory: one file per object.

Durability rules, because a backup that is lost on power failure is worse than none:
every object is written to a temp file in its final directory, fsynced, then published with
a hard link (which fails if the name exists, so objects are never replaced by accident), and
the directory is fsynced so the new name survives a crash. A crash before publishing leaves
only a ``.tmp-*`` file that ``list`` never shows.

``put_file`` of an unnamed spool file created in :meth:`LocalBackend.spool_dir` (the root,
where the file system supports ``O_TMPFILE``) skips the temp file: the spool file is
fsynced and then linked under its final name, with the same no-replace semantics. A crash
before that leaves nothing at all. Any other file is copied into a temp file as ``put`` does.

The key checks at the bottom are shared by every backend so that all of them accept and
reject exactly the same keys.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage.base import ObjectInfo
from roost.storage.fdcache import FdCache
from roost.storage.spool import (
    SPOOL_MODE,
    can_spool_unnamed,
    check_size,
    copy_into,
    is_unnamed,
    link_unnamed,
)

TEMP_PREFIX = ".tmp-"

# errno values meaning "this file system cannot hard-link", where we fall back to a checked
# rename (vfat, some FUSE and SMB mounts).
_NO_HARDLINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV})


class LocalBackend:
    """Objects as files under ``root``: key ``data/ab/abcd`` is ``root/data/ab/abcd``."""

    def __init__(self, root: Path, *, file_mode: int = 0o600) -> None:
        self._root = Path(root)
        self._file_mode = file_mode
        self._fds = FdCache()
        self._spool: str | None = None
        self._spool_probed = False

    def spool_dir(self) -> str | None:
        """The root, if unnamed spool files can be made there (then put_file links them)."""
        # Probed once (a probe creates and drops a file), when the repository exists.
        if not self._spool_probed and self._root.is_dir():
            self._spool = str(self._root) if can_spool_unnamed(self._root) else None
            self._spool_probed = True
        return self._spool

    @property
    def root(self) -> Path:
        return self._root

    def describe(self) -> str:
        return str(self._root)

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        final = self._path(key)
        try:
            self._ensure_dir(final.parent)
            self._store(final, lambda f: f.write(data), overwrite)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise _translate(exc, "write", final) from exc

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        check_size(file, size)
        final = self._path(key)
        try:
            self._ensure_dir(final.parent)
            if not self._link_spool(file, final, overwrite):
                self._store(final, lambda f: copy_into(file, size, f), overwrite)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise _translate(exc, "write", final) from exc

    def _store(self, final: Path, write: Callable[[BinaryIO], object], overwrite: bool) -> None:
        tmp = self._write_temp(final.parent, final.name, write)
        try:
            self._publish(tmp, final, overwrite)
        finally:
            _unlink_quietly(tmp)

    def _link_spool(self, file: BinaryIO, final: Path, overwrite: bool) -> bool:
        """Publish an unnamed spool file by naming it; False if it must be copied instead."""
        # Only an unnamed file: nobody else can change it once it is the object. Its mode is
        # the spool's; an object with another one must be a copy made with that mode.
        if self._file_mode != SPOOL_MODE or not is_unnamed(file):
            return False
        file.flush()
        os.fsync(file.fileno())  # the data is on disk before the name is
        if not overwrite:
            return link_unnamed(file, final.parent, final.name)
        tmp = final.parent / f"{TEMP_PREFIX}{final.name}-{os.urandom(6).hex()}"
        if not link_unnamed(file, final.parent, tmp.name):
            return False
        try:
            os.replace(tmp, final)
        finally:
            _unlink_quietly(tmp)
        return True

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as f:
                return f.read()
        except OSError as exc:
            raise _translate(exc, "read", path) from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        check_range(offset, length)
        path = self._path(key)
        try:
            with self._fds.open(str(path)) as fd:
                return _pread_all(fd, length, offset)
        except OSError as exc:
            raise _translate(exc, "read", path) from exc

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except OSError as exc:
            raise _translate(exc, "stat", path) from exc
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"{path} is not an object")
        return ObjectInfo(key, st.st_size)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
            self._fds.forget(str(path))
            _fsync_dir(path.parent)
        except OSError as exc:
            raise _translate(exc, "delete", path) from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        # Start at the deepest directory the prefix names so that listing 'index/' never
        # walks the (huge) 'data/' tree.
        dir_part, _, name_part = prefix.rpartition("/")
        start = self._root.joinpath(*dir_part.split("/")) if dir_part else self._root
        base = f"{dir_part}/" if dir_part else ""
        return self._walk_translated(start, base, name_part)

    def _walk_translated(self, start: Path, base: str, name_part: str) -> Iterator[ObjectInfo]:
        try:
            yield from self._walk(start, base, name_part)
        except OSError as exc:
            raise _translate(exc, "list", start) from exc

    def _walk(self, directory: Path, base: str, name_prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) or not entry.name.startswith(name_prefix):
                continue
            key = base + entry.name
            # Symlinks are not followed: a repository never contains them, and following
            # one could list (and later delete) objects outside the repository.
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key + "/", "")
            elif entry.is_file(follow_symlinks=False):
                yield ObjectInfo(key, entry.stat(follow_symlinks=False).st_size)

    def _path(self, key: str) -> Path:
        validate_key(key)
        return self._root.joinpath(*key.split("/"))

    def _ensure_dir(self, directory: Path) -> None:
        """Create ``directory`` and missing parents, fsyncing each parent that gains an entry."""
        if directory.is_dir():
            return
        self._ensure_dir(directory.parent)
        try:
            directory.mkdir()
        except FileExistsError:
            return  # another writer created it concurrently
        _fsync_dir(directory.parent)

    def _write_temp(self, directory: Path, name: str, write: Callable[[BinaryIO], object]) -> Path:
        tmp = directory / f"{TEMP_PREFIX}{name}-{os.urandom(6).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self._file_mode)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return tmp

    @staticmethod
    def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
        if overwrite:
            os.replace(tmp, final)
            return
        try:
            os.link(tmp, final)
        except OSError as exc:
            if exc.errno not in _NO_HARDLINKS:
                raise
            # Without hard links there is no atomic no-replace publish; checking first
            # leaves a tiny race, acceptable because objects are content-addressed.
            if final.exists():
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(final)) from exc
            os.replace(tmp, final)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    # Missing is fine: os.replace already consumed it, or it was never fully created.
    with contextlib.suppress(OSError):
        os.unlink(path)


def _translate(exc: OSError, action: str, path: Path) -> StorageError:
    """Map an OSError to the one exception the engine understands, with advice."""
    code = exc.errno
    # On a write, a missing directory is a storage fault, not a missing object.
    if action != "write" and code in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        return ObjectNotFound(f"{path} does not exist")
    if code == errno.EEXIST:
        return ObjectExists(f"{path} already exists and objects are never overwritten")
    reason = exc.strerror or str(exc)
    if code in (errno.EACCES, errno.EPERM):
        advice = "check that this user may read and write the repository directory"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        advice = "free space on the repository disk or prune old snapshots"
    elif code == errno.EROFS:
        advice = "the repository is on a read-only file system; remount it read-write"
    else:
        advice = "check the disk and the mount holding the repository"
    return StorageError(f"cannot {action} {path}: {reason}; {advice}")


# ---- key checks shared by all backends ------------------------------------------------------


def validate_key(key: str) -> None:
    """Reject keys that could escape the repository or hide among temp files."""
    if not key or key.endswith("/"):
        raise StorageError(f"invalid storage key {key!r}: it must name an object")
    _validate_parts(key, key.split("/"), "key")


def validate_prefix(prefix: str) -> None:
    """Like :func:`validate_key`, but '' and a trailing '/' or partial name are allowed."""
    if not prefix:
        return
    parts = prefix.split("/")
    if parts[-1] == "":
        parts = parts[:-1]
    _validate_parts(prefix, parts, "prefix")


def _validate_parts(text: str, parts: list[str], what: str) -> None:
    if text.startswith("/") or "\\" in text or "\x00" in text or ".." in text:
        raise StorageError(f"invalid storage {what} {text!r}: it must be a relative name")
    for part in parts:
        if part in ("", ".") or part.startswith(TEMP_PREFIX):
            raise StorageError(f"invalid storage {what} {text!r}: bad component {part!r}")


def check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"invalid range: offset={offset} length={length}")


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    """pread until ``length`` bytes or end of file (pread may return short reads)."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)

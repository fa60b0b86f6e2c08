"""The filesystem boundary for metadata: ``stat`` -> :class:`Node` on backup, back on restore.

Every path here is ``bytes`` so that names which are not valid UTF-8 round-trip exactly.
``OSError`` is translated once, here:

* backup side (:func:`node_from_stat`, :func:`data_extents`) raises :class:`SourceError`
  chained to the original ``OSError`` (``exc.__cause__.errno`` tells a vanished entry apart);
* :func:`create_special` and :func:`create_symlink` raise :class:`RestoreTargetError`;
* :func:`apply_metadata` never raises for a metadata step that fails: it returns one warning
  string per failure so the caller can report them and go on.

Extended attributes are read and written in every namespace, which includes POSIX ACLs: the
kernel exposes them as the xattrs ``system.posix_acl_access`` and ``system.posix_acl_default``.
ACL entries name numeric ids; they are restored as stored, never mapped by name.

Restore order matters, and :func:`apply_metadata` does it right: owner first (``chown`` clears
setuid/setgid bits and file capabilities), then xattrs (setting an access ACL rewrites the group
mode bits), then the mode, and the times last because every earlier step may touch them.
Directories must get their metadata after their children were created.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from functools import lru_cache

from roost.engine.tree import (
    BLOCKDEV,
    CHARDEV,
    DIR,
    FIFO,
    FILE,
    SOCKET,
    SYMLINK,
    Node,
)
from roost.errors import CorruptObject, RestoreTargetError, SourceError

if sys.platform != "win32":  # Windows has no passwd/group database: names stay None there
    import grp
    import pwd

__all__ = [
    "ACL_XATTRS",
    "apply_metadata",
    "create_special",
    "create_symlink",
    "data_extents",
    "file_type",
    "group_name",
    "is_sparse_candidate",
    "local_gid",
    "local_uid",
    "node_from_stat",
    "owner_ids",
    "restore_ids",
    "user_name",
    "xattrs_of",
]

ACL_XATTRS = (b"system.posix_acl_access", b"system.posix_acl_default")

_TYPE_BY_FMT = {
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFIFO: FIFO,
    stat.S_IFCHR: CHARDEV,
    stat.S_IFBLK: BLOCKDEV,
    stat.S_IFSOCK: SOCKET,
}
_DEVICE_FMT = {CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK}

# errno values that mean "this entry or filesystem has no (readable) xattrs".
_NO_XATTRS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENODATA})
# errno values of getxattr that mean "no such ACL here", or "no ACLs on this file system".
# errno values from lseek(SEEK_DATA/SEEK_HOLE) meaning "holes cannot be asked for here".
_NO_SEEK_HOLE = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ESPIPE})


# ---------------------------------------------------------------- errno translation


def _show(path: bytes) -> str:
    """A path for messages, quoted: UTF-8 shown as text; other bytes, controls and
    backslashes escaped Python-style, so newlines and non-UTF-8 names stay unambiguous."""
    return "'" + "".join(map(_show_char, path.decode("utf-8", "surrogateescape"))) + "'"


def _show_char(char: str) -> str:
    if "\udc80" <= char <= "\udcff":  # an undecodable byte, kept by surrogateescape
        return f"\\x{ord(char) - 0xDC00:02x}"
    if char == "\\" or not char.isprintable():
        return repr(char)[1:-1]
    return char


def _reason(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "?")
    return f"{exc.strerror or 'error'} ({code})"


def _source_error(path: bytes, what: str, exc: OSError) -> SourceError:
    return SourceError(f"cannot {what} {_show(path)}: {_reason(exc)}")


def _target_error(path: bytes, what: str, exc: OSError) -> RestoreTargetError:
    return RestoreTargetError(f"cannot {what} {_show(path)}: {_reason(exc)}")


def _warning(path: bytes, what: str, exc: OSError) -> str:
    return f"{_show(path)}: cannot {what}: {_reason(exc)}"


# ---------------------------------------------------------------- user and group names


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    """The local user name of ``uid``, or None when the id has no passwd entry."""
    try:
        return None if sys.platform == "win32" else pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str | None:
    """The local group name of ``gid``, or None when the id has no group entry."""
    try:
        return None if sys.platform == "win32" else grp.getgrgid(gid).gr_name
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def local_uid(name: str) -> int | None:
    """The local uid of user ``name``, or None when there is no such user here."""
    try:
        return None if sys.platform == "win32" else pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def local_gid(name: str) -> int | None:
    """The local gid of group ``name``, or None when there is no such group here."""
    try:
        return None if sys.platform == "win32" else grp.getgrnam(name).gr_gid
    except KeyError:
        return None


# ---------------------------------------------------------------- backup side


def file_type(st_mode: int) -> str:
    """The tree node type for a ``st_mode``; :class:`SourceError` for an unknown kind."""
    kind = _TYPE_BY_FMT.get(stat.S_IFMT(st_mode))
    if kind is None:
        raise SourceError(f"unsupported file type {stat.S_IFMT(st_mode):#o}")
    return kind


def node_from_stat(
    name: bytes, st: os.stat_result, path: bytes, *, read_xattrs: bool = True
) -> Node:
    """Build the node for the entry at ``path`` from its ``lstat`` result ``st``."""
    kind = file_type(st.st_mode)
    node = Node(
        name=name,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=user_name(st.st_uid),
        group=group_name(st.st_gid),
        size=st.st_size if kind in (FILE, SYMLINK) else 0,
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        device=st.st_dev,
        nlink=st.st_nlink,
        rdev=st.st_rdev if kind in _DEVICE_FMT else 0,
    )
    if kind == SYMLINK:
        node.target = _readlink(path)
    if read_xattrs:
        node.xattrs = xattrs_of(path)
    return node


def _readlink(path: bytes) -> bytes:
    try:
        return os.readlink(path)
    except OSError as exc:
        raise _source_error(path, "read symlink", exc) from exc


def xattrs_of(path: bytes, fd: int | None = None) -> list[tuple[bytes, bytes]]:
    """All xattrs of ``path`` itself (symlinks not followed), ACLs included, sorted by name.

    Given ``fd``, an open descriptor of ``path``, they are read through it: no path lookup.
    """
    try:
        names = os.listxattr(path, follow_symlinks=False) if fd is None else os.listxattr(fd)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return []
        raise _source_error(path, "list xattrs of", exc) from exc
    found: list[tuple[bytes, bytes]] = []
    for name in sorted(os.fsencode(n) for n in names):
        value = _get_xattr(path, name, fd)
        if value is not None:
            found.append((name, value))
    return found


def _get_xattr(path: bytes, name: bytes, fd: int | None = None) -> bytes | None:
    """One xattr value, or None when it vanished since listing or may not be read."""
    try:
        if fd is not None:
            return os.getxattr(fd, name)
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return None
        raise _source_error(path, f"read xattr {name!r} of", exc) from exc


def is_sparse_candidate(st: os.stat_result) -> bool:
    """Cheap pre-check: fewer blocks allocated than the size needs, so there may be holes."""
    return st.st_blocks * 512 < st.st_size


def data_extents(fd: int, size: int) -> list[tuple[int, int]] | None:
    """The ``(offset, length)`` data ranges of the first ``size`` bytes of ``fd``.

    Returns None for a dense file (one range covering everything, or ``size == 0``) and when
    the filesystem cannot report holes; ``[]`` for a file that is all hole. The ranges are
    as the filesystem reports them, so usually aligned to its block size. The file offset
    of ``fd`` is left where it was.
    """
    if size <= 0:
        return None
    try:
        saved = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError as exc:
        if exc.errno in _NO_SEEK_HOLE:
            return None
        raise SourceError(f"cannot seek in file descriptor {fd}: {_reason(exc)}") from exc
    try:
        extents = _scan_extents(fd, size)
    except _NoSeekHole:
        return None
    finally:
        os.lseek(fd, saved, os.SEEK_SET)
    return None if extents == [(0, size)] else extents


class _NoSeekHole(Exception):
    """The filesystem does not support SEEK_DATA/SEEK_HOLE."""


def _scan_extents(fd: int, size: int) -> list[tuple[int, int]]:
    extents: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        start = _seek(fd, offset, os.SEEK_DATA)
        if start is None or start >= size:
            break
        end = _seek(fd, start, os.SEEK_HOLE)
        end = size if end is None else min(end, size)
        extents.append((start, end - start))
        offset = end
    return extents


def _seek(fd: int, offset: int, whence: int) -> int | None:
    """lseek for SEEK_DATA/SEEK_HOLE; None past the last data (ENXIO)."""
    try:
        return os.lseek(fd, offset, whence)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None
        if exc.errno in _NO_SEEK_HOLE:
            raise _NoSeekHole from exc
        raise SourceError(f"cannot find holes in file descriptor {fd}: {_reason(exc)}") from exc


# ---------------------------------------------------------------- restore side


def create_special(path: bytes, node: Node) -> None:
    """Create the fifo or device node ``node`` at ``path`` (mode 0600 until apply_metadata)."""
    if node.type != FIFO and node.type not in _DEVICE_FMT:
        raise ValueError(f"create_special cannot create a {node.type} entry")
    try:
        if node.type == FIFO:
            os.mkfifo(path, 0o600)
        else:
            os.mknod(path, 0o600 | _DEVICE_FMT[node.type], node.rdev)
    except OSError as exc:
        raise _target_error(path, f"create {node.type}", exc) from exc


def create_symlink(path: bytes, node: Node) -> None:
    """Create the symlink ``node`` at ``path``; its target is stored verbatim."""
    if node.target is None:
        raise CorruptObject(f"the symlink entry {_show(node.name)} has no target")
    try:
        os.symlink(node.target, path)
    except OSError as exc:
        raise _target_error(path, "create symlink", exc) from exc


def apply_metadata(
    path: bytes, node: Node, *, numeric_ids: bool = False, restore_owner: bool = True
) -> list[str]:
    """Give the entry at ``path`` the metadata of ``node``; return warnings, never raise.

    Order: owner, xattrs (ACLs included), mode (not for symlinks), times. Ownership is
    skipped silently unless running as root or ``restore_owner`` is false. Unless
    ``numeric_ids``, the stored user/group names win over the ids when they exist locally.
    """
    warnings: list[str] = []
    if restore_owner and os.geteuid() == 0:
        warnings += _apply_owner(path, node, numeric_ids)
    warnings += _apply_xattrs(path, node)
    if node.type != SYMLINK:
        warnings += _apply_mode(path, node)
    warnings += _apply_times(path, node)
    return warnings


def restore_ids(node: Node, *, numeric_ids: bool = False) -> tuple[int, int]:
    """The local ``(uid, gid)`` for ``node``: names mapped when known, else the stored ids."""
    return owner_ids(node.uid, node.gid, node.user, node.group, numeric_ids=numeric_ids)


def owner_ids(
    uid: int, gid: int, user: str | None, group: str | None, *, numeric_ids: bool = False
) -> tuple[int, int]:
    """:func:`restore_ids` for the stored fields themselves (no :class:`Node` needed)."""
    if not numeric_ids:
        mapped_uid = local_uid(user) if user is not None else None
        mapped_gid = local_gid(group) if group is not None else None
        uid = uid if mapped_uid is None else mapped_uid
        gid = gid if mapped_gid is None else mapped_gid
    return uid, gid


def _apply_owner(path: bytes, node: Node, numeric_ids: bool) -> list[str]:
    uid, gid = restore_ids(node, numeric_ids=numeric_ids)
    try:
        os.lchown(path, uid, gid)
    except OSError as exc:
        return [_warning(path, f"set owner {uid}:{gid}", exc)]
    return []


def _apply_xattrs(path: bytes, node: Node) -> list[str]:
    warnings: list[str] = []
    for name, value in node.xattrs:
        try:
            os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as exc:
            warnings.append(_warning(path, f"set xattr {name!r}", exc))
    return warnings


def _apply_mode(path: bytes, node: Node) -> list[str]:
    try:
        os.chmod(path, node.mode)
    except OSError as exc:
        return [_warning(path, f"set mode {node.mode:04o}", exc)]
    return []


def _apply_times(path: bytes, node: Node) -> list[str]:
    try:
        os.utime(path, ns=(node.atime_ns, node.mtime_ns), follow_symlinks=False)
    except OSError as exc:
        return [_warning(path, "set times", exc)]
    return []

"""Snapshot a directory tree's metadata and content, and compare two trees exhaustively.

This is a test oracle, so it does not use ``roost.engine.fsmeta``: it reads the filesystem
directly with ``os.lstat``, ``os.readlink``, ``os.listxattr`` and ``SEEK_DATA``/``SEEK_HOLE``.

Per relative path (bytes; the root itself is ``b"."``) a snapshot records: type, mode (with
setuid/setgid/sticky), uid, gid, mtime_ns, xattrs (every namespace, POSIX ACLs included),
and the sorted group of paths sharing its inode when it has more than one link; for files
also size, atime_ns, sha256 and data extents; for symlinks size, atime_ns and target; for
devices rdev. Directory atimes are not recorded (listing a directory updates them) and
directory sizes are not either (they depend on the filesystem's history).

Atime: reading can change it, so the snapshot lstat()s every entry before reading it and
opens files with ``O_NOATIME`` (owner or root only; otherwise plainly), which leaves file
atimes untouched. ``readlink`` has no such flag and updates a symlink's atime under
``relatime`` unless that atime is newer than the symlink's mtime and ctime, which is why the
awkward tree gives symlinks future atimes. The comparator compares atimes only when asked
(``check_atime=True``); pass False when the source may have been read without ``O_NOATIME``
or lives on a ``strictatime`` mount.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Snapshot = dict[bytes, dict[str, Any]]

ROOT = b"."
ROOT_FIELDS = ("mode", "uid", "gid", "mtime_ns")
_COMMON_FIELDS = ("mode", "uid", "gid", "mtime_ns", "xattrs", "hardlinks")
_TYPE_FIELDS = {
    "file": ("size", "sha256", "extents"),
    "symlink": ("size", "target"),
    "chardev": ("rdev",),
    "blockdev": ("rdev",),
}
_ATIME_TYPES = frozenset({"file", "symlink"})
_TYPE_NAMES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFSOCK: "socket",
}


def snapshot_tree(root: Path) -> Snapshot:
    """Record everything the comparator checks for ``root`` and every entry below it."""
    base = os.fsencode(root)
    snap: Snapshot = {}
    inodes: dict[tuple[int, int], list[bytes]] = defaultdict(list)
    _walk(base, b"", snap, inodes)
    for paths in inodes.values():
        group = tuple(sorted(paths))
        for path in paths:
            snap[path]["hardlinks"] = group if snap[path]["_nlink"] > 1 else None
    return snap


def _walk(
    base: bytes, rel: bytes, snap: Snapshot, inodes: dict[tuple[int, int], list[bytes]]
) -> None:
    path = base + b"/" + rel if rel else base
    key = rel or ROOT
    st = os.lstat(path)
    record = _record(path, st)
    snap[key] = record
    if record["type"] != "dir":
        inodes[(st.st_dev, st.st_ino)].append(key)
        return
    for name in sorted(os.listdir(path)):
        _walk(base, rel + b"/" + name if rel else name, snap, inodes)


def _record(path: bytes, st: os.stat_result) -> dict[str, Any]:
    kind = _TYPE_NAMES.get(stat.S_IFMT(st.st_mode), f"unknown {stat.S_IFMT(st.st_mode):#o}")
    record: dict[str, Any] = {
        "type": kind,
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
        "atime_ns": st.st_atime_ns if kind in _ATIME_TYPES else None,
        "size": st.st_size if kind in ("file", "symlink") else None,
        "rdev": st.st_rdev if kind in ("chardev", "blockdev") else None,
        "target": os.readlink(path) if kind == "symlink" else None,
        "xattrs": _xattrs(path),
        "hardlinks": None,
        "_nlink": st.st_nlink,
    }
    if kind == "file":
        record["sha256"], record["extents"] = _content(path)
    return record


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    return {os.fsencode(name): os.getxattr(path, name, follow_symlinks=False) for name in names}


def _open_noatime(path: bytes) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        return os.open(path, flags)


def _content(path: bytes) -> tuple[str, list[tuple[int, int]]]:
    fd = _open_noatime(path)
    try:
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return digest.hexdigest(), seek_data_extents(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def seek_data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` data ranges of ``fd`` as SEEK_DATA/SEEK_HOLE report them."""
    extents: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end - start))
        offset = end
    return extents


# ---------------------------------------------------------------- comparison


def diff_snapshots(
    src: Snapshot, dst: Snapshot, *, check_atime: bool = True, ignore: Iterable[bytes] = ()
) -> list[str]:
    """Every difference between two snapshots, one readable line each, sorted by path.

    ``ignore`` holds relative paths; each is skipped together with everything below it.
    """
    ignored = tuple(ignore)
    lines: list[str] = []
    for path in sorted(src.keys() | dst.keys()):
        if _is_ignored(path, ignored):
            continue
        if path not in dst:
            lines.append(f"{path!r}: missing in destination (source has a {src[path]['type']})")
        elif path not in src:
            lines.append(f"{path!r}: only in destination (a {dst[path]['type']})")
        else:
            lines += _diff_entry(path, src[path], dst[path], check_atime)
    return lines


def assert_trees_equal(
    src: Path, dst: Path, *, check_atime: bool = True, ignore: Iterable[bytes] = ()
) -> None:
    """Raise AssertionError listing every difference between the trees ``src`` and ``dst``.

    The roots themselves are compared on mode, owner and mtime only. See the module
    docstring for what is compared and how atimes are handled.
    """
    lines = diff_snapshots(
        snapshot_tree(src), snapshot_tree(dst), check_atime=check_atime, ignore=ignore
    )
    if lines:
        header = f"{len(lines)} difference(s) between {src} (source) and {dst} (destination):"
        raise AssertionError("\n  ".join([header, *lines]))


def _is_ignored(path: bytes, ignored: tuple[bytes, ...]) -> bool:
    return any(path == skip or path.startswith(skip + b"/") for skip in ignored)


def _diff_entry(
    path: bytes, src: dict[str, Any], dst: dict[str, Any], check_atime: bool
) -> list[str]:
    if path == ROOT:
        fields: tuple[str, ...] = ROOT_FIELDS
    elif src["type"] != dst["type"]:
        return [f"{path!r}: type differs: source {src['type']} != destination {dst['type']}"]
    else:
        fields = _COMMON_FIELDS + _TYPE_FIELDS.get(src["type"], ())
        if check_atime and src["type"] in _ATIME_TYPES:
            fields += ("atime_ns",)
    return [
        f"{path!r}: {field} differs: {_show_difference(field, src[field], dst[field])}"
        for field in fields
        if src[field] != dst[field]
    ]


def _show_difference(field: str, src: Any, dst: Any) -> str:
    if field == "xattrs":
        return _xattr_difference(src, dst)
    if field == "mode":
        return f"source {src:#06o} != destination {dst:#06o}"
    if field == "extents":
        return f"source {_show_extents(src)} != destination {_show_extents(dst)}"
    return f"source {src!r} != destination {dst!r}"


def _show_extents(extents: list[tuple[int, int]]) -> str:
    shown = ", ".join(f"[{start}, {start + length})" for start, length in extents[:8])
    return f"{len(extents)} range(s) {shown}{', ...' if len(extents) > 8 else ''}"


def _xattr_difference(src: dict[bytes, bytes], dst: dict[bytes, bytes]) -> str:
    parts = []
    if only_src := sorted(src.keys() - dst.keys()):
        parts.append(f"only in source {only_src!r}")
    if only_dst := sorted(dst.keys() - src.keys()):
        parts.append(f"only in destination {only_dst!r}")
    for name in sorted(src.keys() & dst.keys()):
        if src[name] != dst[name]:
            parts.append(f"{name!r} is {_short(src[name])} != {_short(dst[name])}")
    return "; ".join(parts)


def _short(value: bytes) -> str:
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} bytes)"

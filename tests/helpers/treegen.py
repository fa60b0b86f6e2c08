"""Build a directory tree with every kind of entry and metadata a backup has to preserve.

``make_awkward_tree(root)`` creates, under ``root`` (relative paths are bytes)::

    files/        empty, one (1 byte), random_100k, random_3m (seeded random), text_5m
    nested/       a/b/c/deep.txt, a/b/c/d/ (empty), empty_dir/
    links/        to_file -> ../files/one, dangling, to_dir -> ../nested,
                  non_utf8 -> b"target-\\xff\\xfe", absolute -> /etc/passwd
    hard/         a/one, a/two, b/three: one inode, three names, two directories
    sparse/       sparse_20m (data at 0, 8 MiB and the last 4 KiB), all_hole (16 MiB),
                  trailing_hole (4 KiB of data, then a hole to 1 MiB)
    special/      fifo, null (char device 1:3), loop200 (block device 7:200)
    names/        b"caf\\xe9", b"new\\nline", spaces, a leading dash, emoji, CJK, NFD and NFC
                  accents, a 255-byte name, Case/case/CASE, and a non-UTF-8 directory
    modes/        setuid 4755, setgid 2755, none 0000, private 0600,
                  sticky_dir 1777, setgid_dir 2775
    owners/       foreign 1234:5678, foreign_dir, setuid_foreign (4755 and 1234:5678),
                  foreign_link (a symlink owned 4321:8765); these ids have no passwd entry
    xattrs/       binary (binary, empty, 2000-byte and non-UTF-8-named user xattrs),
                  dir (a directory with an xattr), trusted (a trusted.* xattr)
    acl/          acl_file (access ACL), acl_dir (default ACL) with acl_dir/inherited
    times/        odd_ns, pre_1970 (1930), year_2100, old_dir (a directory from 1930)

The root gets mode 0751. Devices, foreign owners, ``trusted.*`` and the unreadable 0000 file
need root; without root those entries are left out (``NEEDS_ROOT`` lists them).

POSIX ACLs are written as the raw ``system.posix_acl_access`` / ``system.posix_acl_default``
xattrs in the kernel's binary format, which is all ``setfacl`` does, so no tool is needed.
When the filesystem refuses them the ACL entries exist without ACLs; tests check for the
xattr before relying on it.

Times are set last, bottom-up, on every entry including directories and the root, to the
values of :func:`entry_times`: odd nanoseconds everywhere, a few fixed special values, and
for symlinks an atime in the year 2100. Reading a symlink (``readlink``) updates its atime
under ``relatime`` unless the atime is newer than both mtime and ctime, so a future atime
keeps symlink atimes stable while the tree is read. Regular files are read with
``O_NOATIME`` by the comparator and the tests.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import struct
import zlib
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

ROOT_MODE = 0o751
FILE_MODE = 0o644
DIR_MODE = 0o755

FOREIGN_UID, FOREIGN_GID = 1234, 5678
LINK_UID, LINK_GID = 4321, 8765

CHAR_RDEV = os.makedev(1, 3)
BLOCK_RDEV = os.makedev(7, 200)

NON_UTF8_TARGET = b"target-\xff\xfe"
SYMLINKS = {
    b"links/to_file": b"../files/one",
    b"links/dangling": b"does/not/exist",
    b"links/to_dir": b"../nested",
    b"links/non_utf8": NON_UTF8_TARGET,
    b"links/absolute": b"/etc/passwd",
}

XATTR_BINARY = b"\x00\x01\xfe\xff roost\n"
XATTRS = {
    b"user.roost.test": XATTR_BINARY,
    b"user.roost.empty": b"",
    b"user.roost.big": bytes(range(256)) * 7 + bytes(208),
    b"user.roost.\xff\xfe": b"non-UTF-8 name",
}
DIR_XATTRS = {b"user.roost.dir": b"on a directory"}
TRUSTED_XATTRS = {b"trusted.roost": b"root only"}

SPARSE_SIZE = 20 * MIB
SPARSE_WRITES = ((0, 5000), (8 * MIB, 4 * KIB), (SPARSE_SIZE - 4 * KIB, 4 * KIB))
ALL_HOLE_SIZE = 16 * MIB
TRAILING_HOLE_SIZE = 1 * MIB
TRAILING_HOLE_WRITES = ((0, 4 * KIB),)

HARDLINKS = (b"hard/a/one", b"hard/a/two", b"hard/b/three")

MODES = {
    b"modes/setuid": 0o4755,
    b"modes/setgid": 0o2755,
    b"modes/none": 0o000,
    b"modes/private": 0o600,
}
DIR_MODES = {b"modes/sticky_dir": 0o1777, b"modes/setgid_dir": 0o2775}

NAMES = (
    b"caf\xe9",
    b"new\nline",
    b" spaces in  name ",
    b"-leading-dash",
    "emoji-🦜🎉".encode(),
    "日本語のファイル".encode(),
    "e\u0301-nfd".encode(),
    "\u00e9-nfc".encode(),
    b"L" * 255,
    b"Case",
    b"case",
    b"CASE",
)
NON_UTF8_DIR = b"names/dir-\xff\xfe"

# (atime_ns, mtime_ns)
ODD_NS_TIMES = (1_111_111_111_987_654_321, 1_234_567_890_123_456_789)
PRE_1970_TIMES = (-86_400_000_000_001, -1_234_567_890_123_456_789)
YEAR_2100_TIMES = (4_102_444_800_999_999_999, 4_102_444_800_000_000_001)
HARDLINK_TIMES = (1_600_000_000_000_000_003, 1_500_000_000_000_000_007)
TIME_OVERRIDES = {
    b"times/odd_ns": ODD_NS_TIMES,
    b"times/pre_1970": PRE_1970_TIMES,
    b"times/year_2100": YEAR_2100_TIMES,
    b"times/old_dir": PRE_1970_TIMES,
    **dict.fromkeys(HARDLINKS, HARDLINK_TIMES),
}
_SYMLINK_ATIME_BASE = 4_102_444_800_000_000_000  # 2100-01-01, see the module docstring

NEEDS_ROOT = (
    b"modes/none",
    b"owners",
    b"special/null",
    b"special/loop200",
    b"xattrs/trusted",
)

# Tags and the "no id" marker of the kernel's posix_acl_xattr format (version 2).
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = (
    0x01,
    0x02,
    0x04,
    0x08,
    0x10,
    0x20,
)
_ACL_NO_ID = 0xFFFFFFFF
ACL_FILE_ENTRIES = (
    (_ACL_USER_OBJ, 6, _ACL_NO_ID),
    (_ACL_USER, 4, FOREIGN_UID),
    (_ACL_GROUP_OBJ, 4, _ACL_NO_ID),
    (_ACL_GROUP, 6, FOREIGN_GID),
    (_ACL_MASK, 6, _ACL_NO_ID),
    (_ACL_OTHER, 0, _ACL_NO_ID),
)
ACL_DIR_DEFAULT_ENTRIES = (
    (_ACL_USER_OBJ, 7, _ACL_NO_ID),
    (_ACL_USER, 5, FOREIGN_UID),
    (_ACL_GROUP_OBJ, 5, _ACL_NO_ID),
    (_ACL_MASK, 5, _ACL_NO_ID),
    (_ACL_OTHER, 0, _ACL_NO_ID),
)


def acl_xattr(entries: tuple[tuple[int, int, int], ...]) -> bytes:
    """The binary value of a POSIX ACL xattr: version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def entry_times(rel: bytes, *, symlink: bool = False) -> tuple[int, int]:
    """The ``(atime_ns, mtime_ns)`` that make_awkward_tree gives the entry at ``rel``."""
    if rel in TIME_OVERRIDES:
        return TIME_OVERRIDES[rel]
    seed = zlib.crc32(rel)
    nanos = (seed * 7919) % 1_000_000_000 | 1
    mtime = (1_500_000_000 + seed % 100_000_000) * 1_000_000_000 + nanos
    atime = _SYMLINK_ATIME_BASE + nanos if symlink else mtime + 3_600_000_000_001
    return atime, mtime


def is_root() -> bool:
    return os.geteuid() == 0


def make_awkward_tree(root: Path) -> None:
    """Create the tree described in the module docstring under ``root`` (created if missing)."""
    base = os.fsencode(root)
    os.makedirs(base, exist_ok=True)
    for build in (
        _files,
        _nested,
        _links,
        _hardlinks,
        _sparse,
        _special,
        _names,
        _modes,
        _owners,
        _xattrs,
        _acls,
        _times,
    ):
        build(base)
    os.chmod(base, ROOT_MODE)
    _set_all_times(base)


# ---------------------------------------------------------------- building blocks


def _join(base: bytes, rel: bytes) -> bytes:
    return base + b"/" + rel


def _mkdir(base: bytes, rel: bytes, mode: int = DIR_MODE) -> bytes:
    path = _join(base, rel)
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    return path


def _write(base: bytes, rel: bytes, data: bytes, mode: int = FILE_MODE) -> bytes:
    path = _join(base, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
    os.chmod(path, mode)
    return path


def _files(base: bytes) -> None:
    rng = random.Random(20260526)
    _write(base, b"files/empty", b"")
    _write(base, b"files/one", b"x")
    _write(base, b"files/random_100k", rng.randbytes(100 * KIB))
    _write(base, b"files/random_3m", rng.randbytes(3 * MIB))
    _write(base, b"files/text_5m", _text(5 * MIB))


def _text(size: int) -> bytes:
    line = "line {:08d}: the quick brown fox jumps over the lazy dog\n"
    count = size // len(line.format(0)) + 1
    return "".join(line.format(i) for i in range(count)).encode()[:size]


def _nested(base: bytes) -> None:
    _mkdir(base, b"nested")
    _mkdir(base, b"nested/a")
    _mkdir(base, b"nested/a/b")
    _mkdir(base, b"nested/a/b/c")
    _write(base, b"nested/a/b/c/deep.txt", b"deep\n")
    _mkdir(base, b"nested/a/b/c/d")
    _mkdir(base, b"nested/empty_dir")


def _links(base: bytes) -> None:
    _mkdir(base, b"links")
    for rel, target in SYMLINKS.items():
        os.symlink(target, _join(base, rel))


def _hardlinks(base: bytes) -> None:
    _mkdir(base, b"hard")
    _mkdir(base, b"hard/a")
    _mkdir(base, b"hard/b")
    first = _write(base, HARDLINKS[0], b"hardlinked\n")
    for rel in HARDLINKS[1:]:
        os.link(first, _join(base, rel))


def _sparse(base: bytes) -> None:
    _mkdir(base, b"sparse")
    _sparse_file(_join(base, b"sparse/sparse_20m"), SPARSE_SIZE, SPARSE_WRITES)
    _sparse_file(_join(base, b"sparse/all_hole"), ALL_HOLE_SIZE, ())
    _sparse_file(_join(base, b"sparse/trailing_hole"), TRAILING_HOLE_SIZE, TRAILING_HOLE_WRITES)


def _sparse_file(path: bytes, size: int, writes: tuple[tuple[int, int], ...]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.ftruncate(fd, size)
        for offset, length in writes:
            os.pwrite(fd, sparse_pattern(offset, length), offset)
    finally:
        os.close(fd)
    os.chmod(path, FILE_MODE)


def sparse_pattern(offset: int, length: int) -> bytes:
    """The (non-zero) bytes written at ``offset`` in the sparse files."""
    return bytes((offset // 4096 + i) % 251 + 1 for i in range(length))


def _special(base: bytes) -> None:
    _mkdir(base, b"special")
    os.mkfifo(_join(base, b"special/fifo"), 0o640)
    os.chmod(_join(base, b"special/fifo"), 0o640)
    if is_root():
        _device(_join(base, b"special/null"), stat.S_IFCHR, CHAR_RDEV, 0o666)
        _device(_join(base, b"special/loop200"), stat.S_IFBLK, BLOCK_RDEV, 0o660)


def _device(path: bytes, kind: int, rdev: int, mode: int) -> None:
    os.mknod(path, kind | mode, rdev)
    os.chmod(path, mode)


def _names(base: bytes) -> None:
    _mkdir(base, b"names")
    for name in NAMES:
        _write(base, b"names/" + name, name + b"\n")
    _mkdir(base, NON_UTF8_DIR)
    _write(base, NON_UTF8_DIR + b"/inside", b"inside a non-UTF-8 directory\n")


def _modes(base: bytes) -> None:
    _mkdir(base, b"modes")
    for rel, mode in MODES.items():
        if mode & 0o400 or is_root():  # only root can read a file that grants nothing
            _write(base, rel, rel + b"\n", mode)
    for rel, mode in DIR_MODES.items():
        _mkdir(base, rel, mode)


def _owners(base: bytes) -> None:
    if not is_root():
        return
    _mkdir(base, b"owners")
    foreign = _write(base, b"owners/foreign", b"not ours\n")
    os.chown(foreign, FOREIGN_UID, FOREIGN_GID)
    foreign_dir = _mkdir(base, b"owners/foreign_dir")
    os.chown(foreign_dir, FOREIGN_UID, FOREIGN_GID)
    setuid = _write(base, b"owners/setuid_foreign", b"#!/bin/sh\n")
    os.chown(setuid, FOREIGN_UID, FOREIGN_GID)
    os.chmod(setuid, 0o4755)  # after chown, which clears setuid
    link = _join(base, b"owners/foreign_link")
    os.symlink(b"foreign", link)
    os.lchown(link, LINK_UID, LINK_GID)


def _xattrs(base: bytes) -> None:
    _mkdir(base, b"xattrs")
    _set_xattrs(_write(base, b"xattrs/binary", b"has xattrs\n"), XATTRS)
    _set_xattrs(_mkdir(base, b"xattrs/dir"), DIR_XATTRS)
    if is_root():
        _set_xattrs(_write(base, b"xattrs/trusted", b"trusted xattr\n"), TRUSTED_XATTRS)


def _set_xattrs(path: bytes, xattrs: dict[bytes, bytes]) -> None:
    for name, value in xattrs.items():
        os.setxattr(path, name, value)


def _acls(base: bytes) -> None:
    _mkdir(base, b"acl")
    acl_file = _write(base, b"acl/acl_file", b"has an access ACL\n", 0o640)
    acl_dir = _mkdir(base, b"acl/acl_dir", 0o750)
    if _try_acl(acl_file, b"system.posix_acl_access", ACL_FILE_ENTRIES):
        _try_acl(acl_dir, b"system.posix_acl_default", ACL_DIR_DEFAULT_ENTRIES)
    # Created after the default ACL so that it inherits an access ACL from it.
    fd = os.open(_join(base, b"acl/acl_dir/inherited"), os.O_WRONLY | os.O_CREAT, 0o666)
    os.write(fd, b"inherited ACL\n")
    os.close(fd)


def _try_acl(path: bytes, name: bytes, entries: tuple[tuple[int, int, int], ...]) -> bool:
    try:
        os.setxattr(path, name, acl_xattr(entries))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True


def _times(base: bytes) -> None:
    _mkdir(base, b"times")
    for rel in (b"times/odd_ns", b"times/pre_1970", b"times/year_2100"):
        _write(base, rel, rel + b"\n")
    _mkdir(base, b"times/old_dir")


def _set_all_times(base: bytes) -> None:
    """Set every entry's times to entry_times(), children before their directory."""
    _set_times_below(base, b"")
    os.utime(base, ns=entry_times(b"."))


def _set_times_below(base: bytes, rel_dir: bytes) -> None:
    directory = _join(base, rel_dir) if rel_dir else base
    for name in sorted(os.listdir(directory)):
        rel = rel_dir + b"/" + name if rel_dir else name
        path = _join(base, rel)
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            _set_times_below(base, rel)
        times = entry_times(rel, symlink=stat.S_ISLNK(st.st_mode))
        os.utime(path, ns=times, follow_symlinks=False)

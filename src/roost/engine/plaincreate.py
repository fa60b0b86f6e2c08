"""Whether creating a file in a directory already gives it the owner and mode a restore wants.

A file created with ``open(O_CREAT, mode)`` belongs to the process's file-system uid and
gid and gets ``mode & ~umask``, unless its directory says otherwise: a setgid bit (or the
``grpid`` mount option) gives it the directory's group, a default ACL replaces the umask,
and some file systems (vfat, FUSE, network ones) make up modes and owners their own way.
Where none of that applies, a restore can create a file with its final mode and skip the
``fchown``/``fchmod`` that would set what it already has.

The restorer asks this of each directory it makes (restorer.py).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from roost.engine.fsmeta import ACL_XATTRS

_NO_ACL = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})

# file systems that create entries the POSIX way described above
POSIX_CREATE_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs"})
DIR_PROBE_MODE = 0o700  # the mode the restorer makes its directories with


@dataclass(frozen=True)
class Creator:
    """Who this process's new files belong to, and what its umask takes away."""

    uid: int
    gid: int
    umask: int


def creator(status: str | None = None) -> Creator | None:
    """This process's fs uid and gid and umask, from ``/proc/self/status`` (``status``: its
    text, for tests); None where it cannot be read (not Linux, Linux before 4.7)."""
    if status is None:
        try:
            with open("/proc/self/status") as handle:
                status = handle.read()
        except OSError:
            return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        uid = int(fields["Uid"].split()[3])  # real, effective, saved, file system
        gid = int(fields["Gid"].split()[3])
        umask = int(fields["Umask"].strip(), 8)
    except (KeyError, IndexError, ValueError):
        return None
    return Creator(uid, gid, umask)


def creates_plainly(
    path: bytes, made_by: Creator, fs_type: Callable[[int], str | None] | None = None
) -> bool:
    """True when entries created in the directory ``path`` get exactly ``made_by``'s uid and
    gid and the mode asked for minus the umask, and so will those of directories created in
    it. ``path`` must be a directory made with ``mkdir(path, DIR_PROBE_MODE)``: what it got
    shows what the file system and its parent did to it. ``fs_type``: how to tell a device's
    file system type (default :func:`filesystem_type`; a caller may remember the answers)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == made_by.uid
        and st.st_gid == made_by.gid
        and stat.S_IMODE(st.st_mode) == DIR_PROBE_MODE & ~made_by.umask  # no setgid either
        and not _has_default_acl(path)
        and (fs_type or filesystem_type)(st.st_dev) in POSIX_CREATE_FILESYSTEMS
    )


def _has_default_acl(path: bytes) -> bool:
    try:
        os.getxattr(path, ACL_XATTRS[1], follow_symlinks=False)
    except OSError as exc:
        return exc.errno not in _NO_ACL  # anything else: it may have one
    return True


def filesystem_type(device: int) -> str | None:
    """The type of the mounted file system with ``st_dev`` ``device`` (from
    ``/proc/self/mountinfo``), or None when it cannot be told. Not cached: a device number
    can come back with another file system (a loop device, a USB disk)."""
    try:
        with open("/proc/self/mountinfo", "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None
    return mountinfo_type(text, device)


def mountinfo_type(text: str, device: int) -> str | None:
    """The file system type of ``device`` in a ``/proc/self/mountinfo`` text."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    for line in text.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) > 2 and parts[2] == wanted and rest:
            return rest.split()[0]
    return None


__all__ = [
    "DIR_PROBE_MODE",
    "POSIX_CREATE_FILESYSTEMS",
    "Creator",
    "creates_plainly",
    "creator",
    "filesystem_type",
    "mountinfo_type",
]

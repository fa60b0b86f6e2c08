"""What a scan compares with the parent snapshot's entry of a file, and the node it builds.

A worker decides from a file's ``lstat`` alone whether the parent's entry stands (see
procreader.py): it compares a :data:`ParentKey` of the ``lstat`` with the same key of the
parent's tree document, which the main process builds without decoding the entry into a
:class:`Node`. A file that is read gets its node from the same ``lstat`` (or ``fstat``).
"""

from __future__ import annotations

import os
import stat
from typing import Any, cast

from roost.engine import fsmeta
from roost.engine.tree import FILE, Node

# The fields of a node that come from lstat, named as in its tree document; the first four
# decide whether the content is unchanged (as Node.same_file_as), all of them whether the
# parent's node can be reused. A key holds them in this order with every zero integer as
# None, because a tree document leaves zero fields out: the main process then builds the
# parent's key with one ``map(doc.get, KEY_FIELDS)`` (see ParentDir.key), the main process
# being the bottleneck of an incremental backup.
KEY_FIELDS = (
    "size",
    "mtime_ns",
    "ctime_ns",
    "inode",
    "mode",
    "uid",
    "gid",
    "user",
    "group",
    "atime_ns",
    "device",
    "nlink",
)
Int = int | None
ParentKey = tuple[Int, Int, Int, Int, Int, Int, Int, str | None, str | None, Int, Int, Int]


def stat_key(node: Node) -> ParentKey:
    """See :data:`ParentKey`."""
    return (
        node.size or None,
        node.mtime_ns or None,
        node.ctime_ns or None,
        node.inode or None,
        node.mode or None,
        node.uid or None,
        node.gid or None,
        node.user,
        node.group,
        node.atime_ns or None,
        node.device or None,
        node.nlink or None,
    )


def file_key(doc: dict[str, Any]) -> ParentKey:
    """The :data:`ParentKey` of a regular file's tree document (a field left out: None)."""
    return cast(ParentKey, tuple(map(doc.get, KEY_FIELDS)))


def lstat_key(st: os.stat_result) -> ParentKey:
    """:data:`ParentKey` of a regular file's ``lstat``, as :func:`stat_key` of its node."""
    uid, gid = st.st_uid, st.st_gid
    return (
        st.st_size or None,
        st.st_mtime_ns or None,
        st.st_ctime_ns or None,
        st.st_ino or None,
        stat.S_IMODE(st.st_mode) or None,
        uid or None,
        gid or None,
        fsmeta.user_name(uid),
        fsmeta.group_name(gid),
        st.st_atime_ns or None,
        st.st_dev or None,
        st.st_nlink or None,
    )


def file_node(name: bytes, st: os.stat_result) -> Node:
    """fsmeta.node_from_stat for a regular file, without xattrs, in one positional call."""
    uid, gid = st.st_uid, st.st_gid
    return Node(
        name,
        FILE,
        stat.S_IMODE(st.st_mode),
        uid,
        gid,
        fsmeta.user_name(uid),
        fsmeta.group_name(gid),
        st.st_size,
        st.st_mtime_ns,
        st.st_atime_ns,
        st.st_ctime_ns,
        st.st_ino,
        st.st_dev,
        st.st_nlink,
    )


__all__ = ["KEY_FIELDS", "ParentKey", "file_key", "file_node", "lstat_key", "stat_key"]

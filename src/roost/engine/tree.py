"""Trees: one directory's entries, serialised as a JSON blob stored like any chunk.

A tree blob (type ``tree``) is UTF-8 JSON ``{"v": 1, "nodes": [node, ...]}`` with nodes sorted
by their name bytes. Byte strings from the filesystem (names, symlink targets, xattr names and
values) are stored as plain strings when they are valid UTF-8, and otherwise under the same key
with a ``_b64`` suffix, so every name round-trips exactly, including non-UTF-8 bytes and
newlines. Chunk and subtree ids are lowercase hex.

File content is the ordered list of chunk ids. For a sparse file, ``extents`` lists the
(offset, length) ranges that hold data; the chunks then cover those ranges back to back, and
everything outside them is a hole, recreated as a hole on restore.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from roost.errors import CorruptObject, UnsupportedFormat

TREE_VERSION = 1

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
FIFO = "fifo"
CHARDEV = "chardev"
BLOCKDEV = "blockdev"
SOCKET = "socket"
NODE_TYPES = frozenset({FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET})


@dataclass(slots=True)
class Node:
    """One directory entry with all the metadata Roost restores."""

    name: bytes
    type: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user: str | None = None
    group: str | None = None
    size: int = 0
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    device: int = 0
    nlink: int = 1
    rdev: int = 0
    content: list[bytes] = field(default_factory=list)
    extents: list[tuple[int, int]] | None = None
    subtree: bytes | None = None
    target: bytes | None = None
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    attributes: int = 0  # Windows file attributes (read-only, hidden, system, archive, ...)

    def __reduce__(self) -> tuple[Callable[..., Node], tuple[object, ...]]:
        # positional fields: unpickling thousands of nodes per worker batch is 3x faster
        return (
            Node,
            (
                self.name,
                self.type,
                self.mode,
                self.uid,
                self.gid,
                self.user,
                self.group,
                self.size,
                self.mtime_ns,
                self.atime_ns,
                self.ctime_ns,
                self.inode,
                self.device,
                self.nlink,
                self.rdev,
                self.content,
                self.extents,
                self.subtree,
                self.target,
                self.xattrs,
                self.attributes,
            ),
        )

    def same_file_as(self, other: Node) -> bool:
        """True when an incremental backup may reuse ``other``'s content for this entry."""
        return (
            self.type == FILE == other.type
            and self.size == other.size
            and self.mtime_ns == other.mtime_ns
            and self.ctime_ns == other.ctime_ns
            and self.inode == other.inode
        )


def _put_bytes(doc: dict[str, Any], key: str, value: bytes) -> None:
    try:
        doc[key] = value.decode("utf-8")
    except UnicodeDecodeError:
        doc[key + "_b64"] = base64.b64encode(value).decode()


def get_bytes(doc: dict[str, Any], key: str) -> bytes | None:
    if key in doc:
        return str(doc[key]).encode("utf-8")
    if key + "_b64" in doc:
        return base64.b64decode(doc[key + "_b64"], validate=True)
    return None


_INT_FIELDS = (
    "mode",
    "uid",
    "gid",
    "size",
    "mtime_ns",
    "atime_ns",
    "ctime_ns",
    "inode",
    "device",
    "nlink",
    "rdev",
    "attributes",
)


def node_to_json(node: Node) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": node.type}
    _put_bytes(doc, "name", node.name)
    for key in _INT_FIELDS:
        value = getattr(node, key)
        if value:
            doc[key] = value
    if node.user is not None:
        doc["user"] = node.user
    if node.group is not None:
        doc["group"] = node.group
    if node.content:
        doc["content"] = [chunk.hex() for chunk in node.content]
    if node.extents is not None:
        doc["extents"] = [list(extent) for extent in node.extents]
    if node.subtree is not None:
        doc["subtree"] = node.subtree.hex()
    if node.target is not None:
        _put_bytes(doc, "target", node.target)
    if node.xattrs:
        doc["xattrs"] = [_xattr_to_json(name, value) for name, value in node.xattrs]
    return doc


def _xattr_to_json(name: bytes, value: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    _put_bytes(doc, "name", name)
    doc["value_b64"] = base64.b64encode(value).decode()
    return doc


def node_from_json(doc: dict[str, Any]) -> Node:
    # Hot in incremental backups: every parent tree is decoded (78,000 nodes for a kernel
    # tree). One positional constructor call; orjson already yields ints, so the integer
    # fields are checked all at once (their sum must be an int: a string, None or a list
    # raises TypeError, a float makes the sum a float) instead of one int() call each.
    get = doc.get
    name = get("name")
    name = name.encode("utf-8") if name.__class__ is str else get_bytes(doc, "name")
    kind = get("type")
    if name is None or kind not in NODE_TYPES:
        raise CorruptObject("a tree entry lacks its name or has an unknown type")
    mode = get("mode", 0)
    uid = get("uid", 0)
    gid = get("gid", 0)
    size = get("size", 0)
    mtime_ns = get("mtime_ns", 0)
    atime_ns = get("atime_ns", 0)
    ctime_ns = get("ctime_ns", 0)
    inode = get("inode", 0)
    device = get("device", 0)
    nlink = get("nlink", 1)
    rdev = get("rdev", 0)
    attributes = get("attributes", 0)
    numbers = (mode, uid, gid, size, mtime_ns, atime_ns, ctime_ns, inode, device, nlink, rdev)
    if (sum(numbers) + attributes).__class__ is not int:
        raise CorruptObject("a tree entry has a non-integer number")
    content = get("content")
    extents = get("extents")
    subtree = get("subtree")
    target = get("target")
    if target is not None or "target_b64" in doc:  # symlinks only
        target = get_bytes(doc, "target")
    xattrs = get("xattrs")
    return Node(
        name,
        kind,
        mode,
        uid,
        gid,
        get("user"),
        get("group"),
        size,
        mtime_ns,
        atime_ns,
        ctime_ns,
        inode,
        device,
        nlink,
        rdev,
        [_fromhex(chunk) for chunk in content] if content else [],
        None if extents is None else [(int(a), int(b)) for a, b in extents],
        None if subtree is None else _fromhex(subtree),
        target,
        [
            (get_bytes(x, "name") or b"", base64.b64decode(x["value_b64"], validate=True))
            for x in xattrs
        ]
        if xattrs
        else [],
        attributes,
    )


_fromhex = bytes.fromhex


def encode_tree(nodes: list[Node]) -> bytes:
    ordered = sorted(nodes, key=lambda node: node.name)
    body = {"v": TREE_VERSION, "nodes": [node_to_json(node) for node in ordered]}
    return orjson.dumps(body)  # compact UTF-8 JSON; several times faster than json


def encode_entry(node: Node) -> bytes:
    """One node as it appears inside a tree blob (for :func:`encode_entries`)."""
    return orjson.dumps(node_to_json(node))


_TREE_START = b'{"v":%d,"nodes":[' % TREE_VERSION


def encode_entries(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A tree blob from ``(name, encode_entry(node))`` pairs, encoded elsewhere.

    Byte for byte what :func:`encode_tree` makes of the same nodes (compact JSON is the
    concatenation of its parts), so backup workers can encode the entries of the files they
    read and the main process only joins them.
    """
    ordered = sorted(entries, key=itemgetter(0))
    return _TREE_START + b",".join([entry for _, entry in ordered]) + b"]}"


def decode_tree(data: bytes) -> list[Node]:
    try:
        body = orjson.loads(data)
        version = body["v"]
        if version != TREE_VERSION:
            raise UnsupportedFormat(f"tree version {version} is newer than this Roost")
        return list(map(node_from_json, body["nodes"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject("a tree blob is malformed") from exc

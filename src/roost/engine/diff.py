"""Walking snapshot trees by path, and comparing two snapshots.

A snapshot's root tree stands for ``/``: its entries are the first components of the backed-up
paths, so the path of every node is the absolute path it had on the source machine (as bytes).

``diff_trees`` walks two trees in parallel, merging each directory's entries by name, and never
descends into a pair of subtrees with the same id: identical ids mean identical contents, so an
unchanged part of a snapshot costs nothing however large it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from roost.engine.repository import Repository
from roost.engine.snapshot import Snapshot
from roost.engine.tree import DIR, Node
from roost.errors import UsageError

ADDED = "+"
REMOVED = "-"
MODIFIED = "M"

# Fields whose change means the entry's data differs, and those that are only metadata.
# Directory mtimes are left out: they change whenever an entry is added or removed, which the
# diff reports on its own. Times of access and change, inodes and link counts are not content.
_CONTENT_FIELDS = ("size", "content", "extents", "target", "rdev")
_METADATA_FIELDS = ("mode", "uid", "gid", "user", "group", "xattrs", "attributes")


@dataclass(frozen=True)
class Change:
    """One difference between two snapshots: ``kind`` is ``+``, ``-`` or ``M``."""

    kind: str
    path: bytes
    type: str
    what: tuple[str, ...] = ()  # for ``M``: "content" and/or "metadata"


def split_path(path: str | bytes) -> list[bytes]:
    """Components of an absolute path inside a snapshot (``/`` gives none)."""
    return [part for part in os.fsencode(path).split(b"/") if part and part != b"."]


def find_node(repo: Repository, snapshot: Snapshot, path: str | bytes) -> Node:
    """The node at ``path`` in ``snapshot``; the root is a directory node without a name."""
    node = Node(name=b"", type=DIR, subtree=snapshot.tree)
    for part in split_path(path):
        if node.type != DIR or node.subtree is None:
            raise _missing(snapshot, path)
        match = [child for child in repo.load_tree(node.subtree) if child.name == part]
        if not match:
            raise _missing(snapshot, path)
        node = match[0]
    return node


def _missing(snapshot: Snapshot, path: str | bytes) -> UsageError:
    shown = os.fsdecode(path).encode("utf-8", "backslashreplace").decode()
    return UsageError(f"snapshot {snapshot.short_id} has no path {shown}")


def join(parent: bytes, name: bytes) -> bytes:
    return parent.rstrip(b"/") + b"/" + name


def walk(repo: Repository, subtree: bytes | None, prefix: bytes) -> Iterator[tuple[bytes, Node]]:
    """Every entry below a directory, depth first in name order, with its full path."""
    stack = [(prefix, iter(_load(repo, subtree)))]
    while stack:
        base, children = stack[-1]
        node = next(children, None)
        if node is None:
            stack.pop()
            continue
        path = join(base, node.name)
        yield path, node
        if node.subtree is not None:
            stack.append((path, iter(_load(repo, node.subtree))))


def _load(repo: Repository, tree_id: bytes | None) -> list[Node]:
    return [] if tree_id is None else repo.load_tree(tree_id)


def list_entries(
    repo: Repository, snapshot: Snapshot, path: str | bytes = "/"
) -> Iterator[tuple[bytes, Node]]:
    """What ``roost ls`` shows: everything below ``path``, or the entry itself if not a dir."""
    node = find_node(repo, snapshot, path)
    parts = split_path(path)
    full = b"/" + b"/".join(parts)
    if node.type != DIR:
        yield full, node
        return
    yield from walk(repo, node.subtree, full)


def diff_trees(repo: Repository, old: bytes, new: bytes, prefix: bytes = b"/") -> Iterator[Change]:
    """The changes from tree ``old`` to tree ``new``, in path order."""
    stack = [_pairs(repo, old, new, prefix)]
    while stack:
        pair = next(stack[-1], None)
        if pair is None:
            stack.pop()
            continue
        path, before, after = pair
        if before is not None and (after is None or after.type != before.type):
            yield from _whole(repo, REMOVED, path, before)
            before = None
        if after is None:
            continue
        if before is None:
            yield from _whole(repo, ADDED, path, after)
            continue
        what = node_changes(before, after)
        if what:
            yield Change(MODIFIED, path, after.type, what)
        if after.type == DIR:
            stack.append(_pairs(repo, before.subtree, after.subtree, path))


def _pairs(
    repo: Repository, old: bytes | None, new: bytes | None, prefix: bytes
) -> Iterator[tuple[bytes, Node | None, Node | None]]:
    """Entries of two directories merged by name; nothing when their trees are identical."""
    if old == new:
        return
    before = {node.name: node for node in _load(repo, old)}
    after = {node.name: node for node in _load(repo, new)}
    for name in sorted(before.keys() | after.keys()):
        yield join(prefix, name), before.get(name), after.get(name)


def _whole(repo: Repository, kind: str, path: bytes, node: Node) -> Iterator[Change]:
    """An added or removed entry, followed by everything below it."""
    yield Change(kind, path, node.type)
    for child_path, child in walk(repo, node.subtree, path):
        yield Change(kind, child_path, child.type)


def node_changes(old: Node, new: Node) -> tuple[str, ...]:
    """("content", "metadata") or a subset: how an entry of the same type changed."""
    what = []
    if old.type != DIR and _differs(old, new, _CONTENT_FIELDS):
        what.append("content")
    fields = _METADATA_FIELDS if old.type == DIR else (*_METADATA_FIELDS, "mtime_ns")
    if _differs(old, new, fields):
        what.append("metadata")
    return tuple(what)


def _differs(old: Node, new: Node, fields: tuple[str, ...]) -> bool:
    return any(getattr(old, name) != getattr(new, name) for name in fields)

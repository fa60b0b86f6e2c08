"""A finished directory's tree blob, from the entries the walk gathered.

The entries are Nodes (directories, symlinks, files read in this process) and slots of files
a worker scanned: reused from the parent unchanged (``REUSED``, not decoded) or encoded by the
worker (their tree entry as bytes). A directory whose entries all equal the parent's reuses
the parent's tree blob; otherwise the entries are joined into a new one.
"""

from __future__ import annotations

from roost.engine.filebatch import Slot
from roost.engine.parenttree import ParentDir
from roost.engine.tree import Node, encode_entries, encode_entry


def same_as_parent(entries: list[Node | Slot | None], parent: ParentDir) -> bool:
    """Whether every entry equals the parent's; reused entries match without decoding."""
    if len(entries) != len(parent):
        return False
    for entry in entries:
        if isinstance(entry, Slot):
            if isinstance(entry.child, bytes) and entry.child != parent.encoded(entry.name):
                return False
            continue
        if entry is None or entry != parent.node(entry.name):
            return False
    return True


def _encoded(entry: Node | Slot | None) -> tuple[bytes, bytes] | None:
    """(name, encoded tree entry) of a directory's entry, for tree.encode_entries."""
    if isinstance(entry, Slot):
        if isinstance(entry.child, bytes):
            return entry.name, entry.child
        # reused: the parent's entry, as it is stored
        stored = None if entry.parent_dir is None else entry.parent_dir.stored(entry.name)
        return None if stored is None else (entry.name, stored)
    return None if entry is None else (entry.name, encode_entry(entry))


def encode(entries: list[Node | Slot | None]) -> bytes:
    """The tree blob of these entries (None: left out, e.g. a file that could not be read)."""
    return encode_entries([pair for pair in map(_encoded, entries) if pair is not None])


__all__ = ["encode", "same_as_parent"]

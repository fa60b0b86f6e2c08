"""A finished directory's tree blob, from the entries the walk gathered.

The entries are Nodes (directories, symlinks, files read in this process) and slots of files
a worker read, whose tree entries it encoded (as bytes). The files a worker found identical
to the parent's entries are only named (``reused``): their entries are the parent's, as
stored. A directory whose entries all equal the parent's reuses the parent's tree blob;
otherwise the entries are joined into a new one.
"""

from __future__ import annotations

from roost.engine.dirtask import Slot
from roost.engine.parenttree import ParentDir
from roost.engine.tree import Node, encode_entries, encode_entry


def same_as_parent(entries: list[Node | Slot | None], reused: int, parent: ParentDir) -> bool:
    """Whether the entries and the ``reused`` files (found in ``parent``, each once) are
    exactly the parent's entries."""
    if len(entries) + reused != len(parent):
        return False
    for entry in entries:
        if isinstance(entry, Slot):  # a worker's encoded entry (see Walker._entry)
            if entry.child != parent.encoded(entry.name):
                return False
            continue
        if entry is None or entry != parent.node(entry.name):
            return False
    return True


def _encoded(entry: Node | Slot | None) -> tuple[bytes, bytes] | None:
    """(name, encoded tree entry) of a directory's entry, for tree.encode_entries."""
    if isinstance(entry, Slot):
        return (entry.name, entry.child) if isinstance(entry.child, bytes) else None
    return None if entry is None else (entry.name, encode_entry(entry))


def encode(
    entries: list[Node | Slot | None], reused: list[bytes], parent: ParentDir | None
) -> bytes:
    """The tree blob of these entries (None: left out, e.g. a file that could not be read)
    and of the ``reused`` files, whose entries are the parent's."""
    pairs = [pair for pair in map(_encoded, entries) if pair is not None]
    for name in reused:
        stored = None if parent is None else parent.stored(name)
        if stored is not None:  # found there by the scanner: always
            pairs.append((name, stored))
    return encode_entries(pairs)


__all__ = ["encode", "same_as_parent"]

"""The parent snapshot's entries of one directory, decoded only as far as a backup needs.

An incremental backup compares every entry with the parent's entry of the same name. Building
a :class:`Node` for each of them was most of a no-change backup's time in the main process,
although for an unchanged file only its ``lstat`` fields matter: they decide that the file is
unchanged, and then the parent's entry is reused as it is. So the tree blob is parsed into its
JSON documents, a regular file's fields are read straight from its document
(:meth:`ParentDir.key`), and a Node is built only for entries that are compared or copied
(:meth:`ParentDir.node`): directories, symlinks, changed files, and every entry of a
directory that has to be encoded anew.
"""

from __future__ import annotations

from typing import Any

import orjson

from roost.engine.scankeys import ParentKey, file_key
from roost.engine.tree import FILE, TREE_VERSION, Node, encode_entry, get_bytes, node_from_json
from roost.errors import CorruptObject, UnsupportedFormat


class ParentDir:
    """One parent tree: entries by name, their documents, Nodes built on demand."""

    def __init__(self, subtree: bytes, docs: list[dict[str, Any]]) -> None:
        self.subtree = subtree
        try:  # names are text but for the rare name_b64: try the common case first
            self._docs: dict[bytes, dict[str, Any]] = {d["name"].encode(): d for d in docs}
        except (KeyError, AttributeError, UnicodeEncodeError):
            self._docs = {_name(doc): doc for doc in docs}
        self._nodes: dict[bytes, Node] = {}

    @classmethod
    def decode(cls, subtree: bytes, data: bytes) -> ParentDir:
        try:
            body = orjson.loads(data)
            if body["v"] != TREE_VERSION:
                raise UnsupportedFormat(f"tree version {body['v']} is newer than this Roost")
            docs = body["nodes"]
            if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
                raise TypeError("nodes is not a list of objects")
            return cls(subtree, docs)
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObject("a tree blob is malformed") from exc

    @classmethod
    def decode_or_none(cls, subtree: bytes | None, data: bytes | None) -> ParentDir | None:
        """:meth:`decode`, or None when there is no tree or it is unusable: a backup then
        reads the files again, which is all an unreadable parent tree may cost."""
        if subtree is None or data is None:
            return None
        try:
            return cls.decode(subtree, data)
        except (CorruptObject, UnsupportedFormat):
            return None

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, name: bytes) -> bool:
        return name in self._docs

    def node(self, name: bytes) -> Node | None:
        """The parent's entry ``name`` as a Node (decoded once); None if absent or malformed.

        A malformed entry only costs reading the file again, as an unreadable tree does.
        """
        node = self._nodes.get(name)
        if node is None:
            doc = self._docs.get(name)
            if doc is None:
                return None
            try:
                node = self._nodes[name] = node_from_json(doc)
            except (CorruptObject, ValueError, KeyError, TypeError):  # as decode_tree's
                return None
        return node

    def stored(self, name: bytes) -> bytes | None:
        """The parent's entry ``name`` as stored in its tree blob, for reusing it unchanged.

        The tree was authenticated when it was read, so the entry is what a backup wrote; it
        is copied as it is rather than decoded into a Node and encoded again (which made a
        directory re-encoded for one changed entry cost ~4 µs for each unchanged one).
        """
        doc = self._docs.get(name)
        return None if doc is None else orjson.dumps(doc)

    def encoded(self, name: bytes) -> bytes | None:
        """The parent's entry ``name`` as the backup encodes it now (tree.encode_entry)."""
        node = self.node(name)
        return None if node is None else encode_entry(node)

    def key(self, name: bytes) -> ParentKey | None:
        """A regular file's ``lstat`` fields as scankeys.stat_key builds them, or None."""
        doc = self._docs.get(name)
        if doc is None or doc.get("type") != FILE:
            return None
        return file_key(doc)

    def nodes(self) -> dict[bytes, Node]:
        return {name: node for name in list(self._docs) if (node := self.node(name)) is not None}


def _name(doc: dict[str, Any]) -> bytes:
    name = get_bytes(doc, "name")
    if name is None:
        raise CorruptObject("a tree entry lacks its name")
    return name


__all__ = ["ParentDir"]

"""A snapshot's regular file as a restore batch job (restore_batch.py): where each of its
chunks is, and which metadata steps writing it needs.

Most files of a tree share a few owners and modes, so the owner mapping and the metadata
steps are decided once per combination; a file of a fresh directory can be taken straight
from its tree document (:func:`quick_file`) without building a Node.
"""

from __future__ import annotations

import os
from typing import Any

from roost.engine import fsmeta
from roost.engine.pack import pack_key
from roost.engine.plaincreate import Creator
from roost.engine.repository import Repository
from roost.engine.restore_batch import Chunk, FileJob
from roost.engine.tree import FILE, Node
from roost.errors import CorruptObject

PRIVATE = 0o600  # a file's mode while it is written, when its final mode must wait

# A regular file taken straight from its tree document (see quick_file): name, size, mode,
# uid, gid, user, group, atime_ns, mtime_ns, chunk ids, and the document itself (a Node is
# made from it only if the file has to be redone on the robust path)
QuickFile = tuple[bytes, int, int, int, int, Any, Any, int, int, list[bytes], dict[str, Any]]
# (mode to create a file with, mode to set or None, owner to set or None)
MetadataSteps = tuple[int, int | None, tuple[int, int] | None]


class JobBuilder:
    """Builds the batch jobs of one restore, remembering what files have in common."""

    def __init__(self, repo: Repository, creator: Creator | None) -> None:
        self.repo = repo
        self._creator = creator  # None: creation is not known to be plain anywhere
        self._as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self._pack_keys: dict[bytes, str] = {}
        self._owners: dict[tuple[int, int, Any, Any], tuple[int, int]] = {}
        self._steps: dict[tuple[int, int, int, Any, Any, bool], MetadataSteps] = {}

    def job(self, node: Node, path: bytes, plain: bool) -> FileJob | None:
        """The job that writes ``node`` to ``path``; None when a chunk is in no index."""
        chunks = self._chunks(node.content)
        if chunks is None:
            return None
        owner = self._owner_of(node.uid, node.gid, node.user, node.group)
        create_mode, mode, owner = self._metadata_steps(node.mode, owner, node.xattrs, plain)
        job: FileJob = (
            path,
            node.size,
            create_mode,
            mode,
            owner,
            node.atime_ns,
            node.mtime_ns,
            node.xattrs,
            node.extents,
            chunks,
        )
        return job

    def quick_job(self, quick: QuickFile, path: bytes, plain: bool) -> FileJob | None:
        """:meth:`job` for a file of a fresh directory, from its tree document."""
        _name, size, mode, uid, gid, user, group, atime_ns, mtime_ns, ids, _doc = quick
        chunks = self._chunks(ids)
        if chunks is None:
            return None
        # most files share a few owners and modes: decide once for each combination
        stored = (mode, uid, gid, user, group, plain)
        steps = self._steps.get(stored)
        if steps is None:
            owner = self._owner_of(uid, gid, user, group)
            steps = self._steps[stored] = self._metadata_steps(mode, owner, [], plain)
        create_mode, set_mode, owner = steps
        job: FileJob = (
            path,
            size,
            create_mode,
            set_mode,
            owner,
            atime_ns,
            mtime_ns,
            [],
            None,
            chunks,
        )
        return job

    def _chunks(self, blob_ids: list[bytes]) -> list[Chunk] | None:
        """Where to read each chunk; None when one is in no index."""
        chunks: list[Chunk] = []
        find = self.repo.index.find
        keys = self._pack_keys
        for blob_id in blob_ids:
            loc = find(blob_id)
            if loc is None:
                return None
            key = keys.get(loc.pack)
            if key is None:
                key = keys[loc.pack] = pack_key(loc.pack)
            chunks.append(
                (blob_id, key, loc.type, loc.offset, loc.length, loc.raw_length, loc.compression)
            )
        return chunks

    def _owner_of(self, uid: int, gid: int, user: Any, group: Any) -> tuple[int, int] | None:
        """The local owner to give a file (names mapped), or None when not running as root."""
        if not self._as_root:
            return None
        stored = (uid, gid, user, group)
        owner = self._owners.get(stored)
        if owner is None:
            owner = self._owners[stored] = fsmeta.owner_ids(uid, gid, user, group)
        return owner

    def _metadata_steps(
        self,
        mode: int,
        owner: tuple[int, int] | None,
        xattrs: list[tuple[bytes, bytes]],
        plain: bool,
    ) -> MetadataSteps:
        """(mode to create the file with, mode to set or None, owner to set or None).

        In a plain directory a new file already has the creator's owner and ``mode & ~umask``:
        an owner that is the creator's need not be set, and then a mode the umask leaves
        alone (no setuid, setgid or sticky bit, which ``chown`` would clear and ``open``
        may drop) can be given at creation. Not with xattrs: an ACL rewrites the mode, so
        the mode must come after them. Otherwise the file stays private (0600) while it is
        written and gets owner, xattrs and mode afterwards, in ``apply_metadata``'s order.
        """
        creator = self._creator
        if not plain or creator is None:
            return PRIVATE, mode, owner
        if owner == (creator.uid, creator.gid):
            owner = None
        if owner is None and not xattrs and not mode & ~0o777 and not mode & creator.umask:
            return mode, None, None
        return PRIVATE, mode, owner


def quick_file(doc: dict[str, Any]) -> QuickFile | None:
    """A regular file's fields straight from its tree document, checked as ``node_from_json``
    checks them; None for anything else, and for files with a non-UTF-8 name, xattrs, holes
    or hard links (those go through a Node)."""
    get = doc.get
    name = get("name")
    if (
        get("type") != FILE
        or name.__class__ is not str
        or get("nlink", 1) != 1
        or "xattrs" in doc
        or "extents" in doc
    ):
        return None
    mode, uid, gid, size = get("mode", 0), get("uid", 0), get("gid", 0), get("size", 0)
    atime_ns, mtime_ns = get("atime_ns", 0), get("mtime_ns", 0)
    unused = get("ctime_ns", 0) + get("inode", 0) + get("device", 0) + get("rdev", 0)
    total = mode + uid + gid + size + atime_ns + mtime_ns + unused + get("attributes", 0)
    if total.__class__ is not int:  # a str, None or list raised TypeError already
        raise CorruptObject("a tree entry has a non-integer number")
    ids = [bytes.fromhex(chunk) for chunk in get("content") or ()]
    user, group = get("user"), get("group")
    return (name.encode(), size, mode, uid, gid, user, group, atime_ns, mtime_ns, ids, doc)


__all__ = ["PRIVATE", "JobBuilder", "MetadataSteps", "QuickFile", "quick_file"]

"""A directory the walk has listed, and what its regular files became.

A :class:`DirTask` waits until all its children are known; then the walker encodes its tree.
Its regular files go to the scanners as :class:`FileGroup` s (filebatch.py). A file found
identical to the parent snapshot's entry is only named in the task's ``reused`` list (a
whole group of them costs one answer); any other becomes a :class:`Slot` among the task's
``children``, next to its directories, symlinks and other entries. :class:`BatchOutcome`
turns one scanned batch's answers into those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roost.engine import procreader
from roost.engine.parenttree import ParentDir
from roost.engine.tree import Node

_UNSET: object = object()


_UNDECODED: object = object()


@dataclass(eq=False)
class DirTask:
    """A directory listed by the walker whose tree is encoded once its children are known.

    Its regular files go to the scanners in :class:`FileGroup` s. The files found identical
    to the parent's entries are only named in ``reused``; every other file becomes a
    :class:`Slot` among ``children``, next to the directory's other entries.
    """

    node: Node
    directory: bytes = b""  # its path, ending in "/"
    rel: bytes = b""  # its path relative to its source
    root_dev: int = 0
    subtree: bytes | None = None  # its tree in the parent snapshot
    tree: bytes | None = None  # that tree blob, decoded only where needed (parent_dir)
    read_anyway: frozenset[bytes] = frozenset()  # files missed last time: read whatever
    big: bool = False  # more files than go whole to a worker (procreader.ParentEntries)
    children: list[object] = field(default_factory=list)
    reused: list[bytes] = field(default_factory=list)  # files equal to the parent's entry
    parent_entries: int | None = None  # entries of the parent tree, as a scanner counted
    waiting: int = 0
    _parent: object = _UNDECODED

    def parent_dir(self) -> ParentDir | None:
        """The parent snapshot's tree of this directory, decoded on first use.

        Two threads may decode it at once: the second only wastes its time.
        """
        if self._parent is _UNDECODED:
            self._parent = ParentDir.decode_or_none(self.subtree, self.tree)
        return self._parent  # type: ignore[return-value]

    def forget(self) -> None:
        """Drop what the encoded directory no longer needs (slots point back here)."""
        self.children.clear()
        self.reused.clear()
        self.tree = None
        self._parent = None


@dataclass(eq=False, slots=True)
class FileGroup:
    """Regular files of one directory on their way to a scanner, in their listed order."""

    task: DirTask
    names: list[bytes]

    def request(self) -> procreader.ScanGroup:
        return self.task.directory, self._parent_entries(), self.names, self.task.read_anyway

    def _parent_entries(self) -> procreader.ParentEntries:
        task = self.task
        if task.tree is None or not task.big:
            return task.tree
        parent = task.parent_dir()  # see procreader.ParentEntries
        if parent is None:
            return None
        return [None if name in task.read_anyway else parent.key(name) for name in self.names]


@dataclass(eq=False, slots=True)
class Slot:
    """A regular file a scanner did not find identical; ``child`` is what it became."""

    name: bytes
    task: DirTask
    child: object = _UNSET

    @property
    def path(self) -> bytes:
        return self.task.directory + self.name

    @property
    def rel(self) -> bytes:
        rel = self.task.rel
        return rel + b"/" + self.name if rel else self.name

    @property
    def root_dev(self) -> int:
        return self.task.root_dev

    @property
    def parent_dir(self) -> ParentDir | None:
        return self.task.parent_dir()

    def parent(self) -> Node | None:
        """The parent snapshot's entry of this name, if any (decoded on first use)."""
        parent_dir = self.task.parent_dir()
        return None if parent_dir is None else parent_dir.node(self.name)


class BatchOutcome:
    """What one scanned batch's answers make of its groups (see filebatch.FileBatches._scanned)."""

    def __init__(self) -> None:
        self.scanned: list[tuple[Slot, procreader.FileResult]] = []
        self.handed_back: list[Slot] = []
        self.rest: list[FileGroup] = []  # the part of a group a scanner did not reach
        self.identical = 0
        self._reused: list[tuple[FileGroup, list[bytes]]] = []
        self._answered: list[FileGroup] = []

    def add(self, group: FileGroup, answer: procreader.GroupResult) -> None:
        self._answered.append(group)
        if isinstance(answer, int):  # all identical: the parent's entries stand
            group.task.parent_entries = answer
            self._reused.append((group, group.names))
            self.identical += len(group.names)
            return
        task, reused = group.task, []
        for name, result in zip(group.names, answer, strict=False):
            if result.outcome == procreader.IDENTICAL:
                reused.append(name)
            elif result.outcome == procreader.MAIN:
                self.handed_back.append(Slot(name, task))
            else:
                self.scanned.append((Slot(name, task), result))
        self._reused.append((group, reused))
        self.identical += len(reused)
        if len(answer) < len(group.names):
            self.rest.append(FileGroup(task, group.names[len(answer) :]))

    def settle(self) -> None:
        """Give the tasks their files' outcomes (with the batches' condition held)."""
        for group, names in self._reused:
            group.task.reused.extend(names)
        for slot, _ in self.scanned:
            slot.task.children.append(slot)
        for slot in self.handed_back:  # the walker settles each once it has handled it
            slot.task.children.append(slot)
            slot.task.waiting += 1
        for group in self.rest:
            group.task.waiting += 1
        for group in self._answered:
            group.task.waiting -= 1


def is_unset(child: object) -> bool:
    return child is _UNSET


__all__ = ["BatchOutcome", "DirTask", "FileGroup", "Slot", "is_unset"]

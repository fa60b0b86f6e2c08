"""Repository statistics: how much data the snapshots hold, and what it costs to store.

- logical size: the sum of file sizes, counted in every snapshot that holds a file;
- unique size: the plaintext bytes of the distinct data blobs the snapshots reference;
- stored size: for the whole repository the size of every pack in storage (what the storage
  bills); for one snapshot the stored (compressed, encrypted) size of the blobs it references;
- dedup ratio = logical / unique, compression ratio = unique / stored.

Every tree is read once: a subtree's totals are remembered by its id, so the many snapshots
of one server, which share almost all their trees, cost little more than one.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.engine.diff import find_node
from roost.engine.recovery import list_packs
from roost.engine.repository import Repository
from roost.engine.snapshot import Snapshot
from roost.engine.tree import DIR, FILE, Node


@dataclass(frozen=True)
class RepoStats:
    snapshots: int
    files: int
    logical_size: int
    unique_size: int
    stored_size: int
    blobs: int  # distinct referenced blobs, data and tree
    packs: int
    missing_blobs: int  # referenced but in no index; `roost check` explains

    @property
    def dedup_ratio(self) -> float:
        return self.logical_size / self.unique_size if self.unique_size else 0.0

    @property
    def compression_ratio(self) -> float:
        return self.unique_size / self.stored_size if self.stored_size else 0.0


class TreeTotals:
    """(files, bytes) below each tree, memoised by tree id; collects the blobs it meets."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._totals: dict[bytes, tuple[int, int]] = {}
        self.data_blobs: set[bytes] = set()

    @property
    def tree_blobs(self) -> set[bytes]:
        return set(self._totals)

    def of(self, root: bytes) -> tuple[int, int]:
        """Files and logical bytes in the tree ``root`` and all its subtrees."""
        pending: dict[bytes, list[Node]] = {}
        stack = [root]
        while stack:
            tree_id = stack[-1]
            if tree_id in self._totals:
                stack.pop()
                continue
            nodes = pending.get(tree_id)
            if nodes is None:
                nodes = pending[tree_id] = self.repo.load_tree(tree_id)
            todo = [n.subtree for n in nodes if n.subtree and n.subtree not in self._totals]
            if todo:
                stack.extend(todo)
                continue
            self._totals[tree_id] = self._sum(nodes)
            del pending[tree_id]
            stack.pop()
        return self._totals[root]

    def _sum(self, nodes: list[Node]) -> tuple[int, int]:
        files = size = 0
        for node in nodes:
            if node.type == FILE:
                files += 1
                size += node.size
                self.data_blobs.update(node.content)
            elif node.subtree is not None:
                sub_files, sub_size = self._totals[node.subtree]
                files += sub_files
                size += sub_size
        return files, size

    def of_node(self, node: Node) -> tuple[int, int]:
        if node.type == DIR:
            return self.of(node.subtree) if node.subtree is not None else (0, 0)
        return (1, node.size) if node.type == FILE else (0, 0)


def compute_stats(repo: Repository, snapshot: Snapshot | None = None) -> RepoStats:
    """Statistics of the whole repository, or of one snapshot."""
    snapshots = [snapshot] if snapshot is not None else repo.list_snapshots()
    totals = TreeTotals(repo)
    files = logical = 0
    for snap in snapshots:
        snap_files, snap_size = totals.of(snap.tree)
        files += snap_files
        logical += snap_size
    index = repo.index
    data_locations = [index.find(blob) for blob in totals.data_blobs]
    tree_locations = [index.find(blob) for blob in totals.tree_blobs]
    found = [loc for loc in data_locations + tree_locations if loc is not None]
    unique = sum(loc.raw_length for loc in data_locations if loc is not None)
    if snapshot is None:
        packs = list_packs(repo)
        stored, pack_count = sum(size for _, size in packs.values()), len(packs)
    else:
        stored, pack_count = sum(loc.length for loc in found), len({loc.pack for loc in found})
    return RepoStats(
        snapshots=len(snapshots),
        files=files,
        logical_size=logical,
        unique_size=unique,
        stored_size=stored,
        blobs=len(data_locations) + len(tree_locations),
        packs=pack_count,
        missing_blobs=len(data_locations) + len(tree_locations) - len(found),
    )


def selection_totals(repo: Repository, snapshot: Snapshot, paths: list[str]) -> tuple[int, int]:
    """Files and bytes a restore of ``paths`` (all of the snapshot when empty) writes."""
    totals = TreeTotals(repo)
    if not paths:
        return totals.of(snapshot.tree)
    files = size = 0
    for path in paths:
        sub_files, sub_size = totals.of_node(find_node(repo, snapshot, path))
        files += sub_files
        size += sub_size
    return files, size

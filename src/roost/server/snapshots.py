"""A backup set's snapshots in the organisation repository (tagged ``roost-set=<set id>``)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime

from roost.engine.repository import Repository
from roost.engine.snapshot import Snapshot
from roost.engine.tree import DIR, Node
from roost.errors import BlobNotFound, ObjectNotFound
from roost.server.errors import NotFound
from roost.storage.base import Backend


def set_tag(set_id: str) -> str:
    return f"roost-set={set_id}"


def job_tag(job_id: str) -> str:
    return f"roost-job={job_id}"


def set_snapshots(repo: Repository, set_id: str) -> list[Snapshot]:
    """The set's snapshots, oldest first."""
    tag = set_tag(set_id)
    return [snap for snap in repo.list_snapshots() if tag in snap.tags]


def snapshot_exists(backend: Backend, snapshot_id: str) -> bool:
    try:
        backend.stat(f"snapshots/{snapshot_id}")
    except ObjectNotFound:
        return False
    return True


def find_set_snapshot(
    repo: Repository, set_id: str, ref: str, before: datetime | None = None
) -> Snapshot:
    """Resolve "latest" (optionally the latest before ``before``) or an id prefix."""
    snaps = set_snapshots(repo, set_id)
    if before is not None:
        snaps = [s for s in snaps if s.time <= before]
    if ref == "latest":
        if not snaps:
            when = f" before {before.isoformat()}" if before else ""
            raise NotFound(f"the backup set has no snapshot{when}; run a backup first")
        return snaps[-1]
    matches = [s for s in snaps if s.id.startswith(ref.lower())]
    if len(matches) != 1:
        what = "no snapshot" if not matches else f"{len(matches)} snapshots"
        raise NotFound(
            f"{what} of this backup set match {ref!r}; list them with GET /sets/NAME/snapshots"
        )
    return matches[0]


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    type: str
    size: int
    mode: int
    mtime: datetime


def list_directory(repo: Repository, snap: Snapshot, path: str) -> list[Entry]:
    """The entries of directory ``path`` (absolute, as backed up) in ``snap``."""
    nodes = _load_tree(repo, snap.tree)
    parts = [p for p in path.split("/") if p]
    for depth, part in enumerate(parts):
        match = next((n for n in nodes if os.fsdecode(n.name) == part), None)
        if match is None or match.type != DIR or match.subtree is None:
            shown = "/" + "/".join(parts[: depth + 1])
            raise NotFound(f"{shown} is not a directory in snapshot {snap.short_id}")
        nodes = _load_tree(repo, match.subtree)
    base = "/" + "/".join(parts)
    return [_entry(base, node) for node in nodes]


def _entry(base: str, node: Node) -> Entry:
    name = os.fsdecode(node.name)
    return Entry(
        name=name,
        path=f"{base.rstrip('/')}/{name}",
        type=node.type,
        size=node.size,
        mode=stat.S_IMODE(node.mode),
        mtime=datetime.fromtimestamp(node.mtime_ns / 1e9).astimezone(),
    )


def _load_tree(repo: Repository, tree_id: bytes) -> list[Node]:
    """Reload the index once when a backup indexed the tree after we loaded ours."""
    try:
        return repo.load_tree(tree_id)
    except BlobNotFound:
        repo.load_index()
        return repo.load_tree(tree_id)

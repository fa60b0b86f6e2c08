"""Choosing the parent of a backup: the snapshot whose unchanged files it may reuse."""

from __future__ import annotations

from collections.abc import Iterable

from roost.engine.repository import Repository
from roost.engine.snapshot import Snapshot


def find_parent(repo: Repository, hostname: str, paths: Iterable[str]) -> Snapshot | None:
    """The latest snapshot of ``hostname`` with exactly the same set of source paths.

    ``paths`` must be normalised like the archiver does (``normalise_sources``), which is how
    the snapshots store them. Another set of paths means another backup set: its files may
    match by name, but it is not this set's history.
    """
    wanted = sorted(set(paths))
    matches = [
        snap
        for snap in repo.list_snapshots()
        if snap.hostname == hostname and sorted(set(snap.paths)) == wanted
    ]
    return matches[-1] if matches else None

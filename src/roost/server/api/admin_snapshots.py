"""A backup set's snapshots and their contents, read from the organisation repository."""

from __future__ import annotations

from fastapi import APIRouter

from roost.server.api import lookup
from roost.server.api.deps import ReadSessionDep, StateDep, ViewerDep
from roost.server.api.schemas import EntryPublic, SnapshotPublic
from roost.server.snapshots import find_set_snapshot, list_directory, set_snapshots

router = APIRouter(tags=["snapshots"])


@router.get("/sets/{name}/snapshots")
def list_snapshots(
    name: str, session: ReadSessionDep, state: StateDep, user: ViewerDep
) -> list[SnapshotPublic]:
    backup_set = lookup.backup_set(session, user.org_id, name)
    repo = state.repos.repository(user.org_id)
    return [
        SnapshotPublic(id=s.id, short_id=s.short_id, time=s.time, paths=s.paths, summary=s.summary)
        for s in set_snapshots(repo, backup_set.id)
    ]


@router.get("/sets/{name}/snapshots/{snapshot}/ls")
def list_entries(
    name: str,
    snapshot: str,
    session: ReadSessionDep,
    state: StateDep,
    user: ViewerDep,
    path: str = "/",
) -> list[EntryPublic]:
    backup_set = lookup.backup_set(session, user.org_id, name)
    repo = state.repos.repository(user.org_id)
    snap = find_set_snapshot(repo, backup_set.id, snapshot)
    return [EntryPublic(**vars(entry)) for entry in list_directory(repo, snap, path)]

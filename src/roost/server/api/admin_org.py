"""The organisation: its recovery key (admins only; with the storage it restores everything)."""

from __future__ import annotations

from fastapi import APIRouter

from roost.server.api.deps import AdminDep, NowDep, ReadSessionDep, StateDep
from roost.server.api.schemas import RecoveryKeyPublic
from roost.server.catalog.queries import audit, orgs
from roost.server.errors import NotFound
from roost.server.orgrepo import RECOVERY_PURPOSE

router = APIRouter(tags=["organisation"])


@router.get("/organisation/recovery-key")
def recovery_key(
    session: ReadSessionDep, state: StateDep, user: AdminDep, now: NowDep
) -> RecoveryKeyPublic:
    org = orgs.get(session, user.org_id)
    if org is None:
        raise NotFound("your organisation no longer exists")
    audit.record(session, user.org_id, now, user.username, "recovery key shown", org.name)
    return RecoveryKeyPublic(
        recovery_key=state.secrets.unwrap(org.recovery_key_wrapped, RECOVERY_PURPOSE)
    )

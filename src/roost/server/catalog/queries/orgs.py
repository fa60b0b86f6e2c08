"""Organisations."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from roost.server.catalog.models import Organisation


def get_by_name(session: Session, name: str) -> Organisation | None:
    return session.scalars(select(Organisation).where(Organisation.name == name)).one_or_none()


def get(session: Session, org_id: str) -> Organisation | None:
    return session.get(Organisation, org_id)


def list_all(session: Session) -> list[Organisation]:
    return list(session.scalars(select(Organisation).order_by(Organisation.created_at)))


def add(session: Session, org: Organisation) -> Organisation:
    session.add(org)
    session.flush()
    return org


def claim_maintenance(
    session: Session, org_id: str, previous: datetime | None, now: datetime
) -> bool:
    """Record that maintenance runs now; False when another replica claimed it first."""
    unchanged = (
        Organisation.last_maintenance_at.is_(None)
        if previous is None
        else Organisation.last_maintenance_at == previous
    )
    result = session.execute(
        update(Organisation)
        .where(Organisation.id == org_id, or_(unchanged))
        .values(last_maintenance_at=now)
    )
    return cast(CursorResult[Any], result).rowcount == 1

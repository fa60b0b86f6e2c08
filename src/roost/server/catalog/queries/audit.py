"""The audit trail: who did what, when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from roost.server.catalog.models import AuditEvent


def record(
    session: Session,
    org_id: str,
    now: datetime,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    event = AuditEvent(org_id=org_id, at=now, actor=actor, action=action, target=target)
    event.detail = detail or {}
    session.add(event)


def recent(session: Session, org_id: str, limit: int = 100) -> list[AuditEvent]:
    stmt = (
        select(AuditEvent)
        .where(AuditEvent.org_id == org_id)
        .order_by(AuditEvent.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))

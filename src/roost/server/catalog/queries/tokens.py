"""Enrollment tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from roost.server.catalog.models import EnrollmentToken


def add(session: Session, token: EnrollmentToken) -> EnrollmentToken:
    session.add(token)
    session.flush()
    return token


def list_for_org(session: Session, org_id: str) -> list[EnrollmentToken]:
    stmt = (
        select(EnrollmentToken)
        .where(EnrollmentToken.org_id == org_id)
        .order_by(EnrollmentToken.created_at.desc())
    )
    return list(session.scalars(stmt))


def get(session: Session, org_id: str, token_id: str) -> EnrollmentToken | None:
    token = session.get(EnrollmentToken, token_id)
    return token if token is not None and token.org_id == org_id else None


def find_by_hash(session: Session, token_hash: str) -> EnrollmentToken | None:
    stmt = select(EnrollmentToken).where(EnrollmentToken.token_hash == token_hash)
    return session.scalars(stmt).one_or_none()


def consume(session: Session, token_id: str, now: datetime) -> bool:
    """Use the token once; a conditional update so two enrollments cannot share the last use."""
    result = session.execute(
        update(EnrollmentToken)
        .where(
            EnrollmentToken.id == token_id,
            EnrollmentToken.uses_left > 0,
            EnrollmentToken.revoked.is_(False),
            EnrollmentToken.expires_at > now,
        )
        .values(uses_left=EnrollmentToken.uses_left - 1)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def revoke(session: Session, token: EnrollmentToken) -> None:
    token.revoked = True

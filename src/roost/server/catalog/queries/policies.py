"""Backup policies."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from roost.server.catalog.models import Policy


def get(session: Session, policy_id: str) -> Policy | None:
    return session.get(Policy, policy_id)


def get_by_name(session: Session, org_id: str, name: str) -> Policy | None:
    stmt = select(Policy).where(Policy.org_id == org_id, Policy.name == name)
    return session.scalars(stmt).one_or_none()


def list_for_org(session: Session, org_id: str) -> list[Policy]:
    stmt = select(Policy).where(Policy.org_id == org_id).order_by(Policy.name)
    return list(session.scalars(stmt))


def add(session: Session, policy: Policy) -> Policy:
    session.add(policy)
    session.flush()
    return policy

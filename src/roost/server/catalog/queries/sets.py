"""Backup sets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from roost.server.catalog.models import Agent, BackupSet, Policy


def get(session: Session, set_id: str) -> BackupSet | None:
    return session.get(BackupSet, set_id)


def get_by_name(session: Session, org_id: str, name: str) -> BackupSet | None:
    stmt = select(BackupSet).where(BackupSet.org_id == org_id, BackupSet.name == name)
    return session.scalars(stmt).one_or_none()


def list_for_org(session: Session, org_id: str) -> list[BackupSet]:
    stmt = select(BackupSet).where(BackupSet.org_id == org_id).order_by(BackupSet.name)
    return list(session.scalars(stmt))


def list_for_agent(session: Session, agent_id: str) -> list[BackupSet]:
    return list(session.scalars(select(BackupSet).where(BackupSet.agent_id == agent_id)))


def list_scheduled(session: Session) -> list[tuple[BackupSet, Policy, Agent]]:
    """Every backup set that has a policy, with its policy and agent (all organisations)."""
    stmt = (
        select(BackupSet, Policy, Agent)
        .join(Policy, BackupSet.policy_id == Policy.id)
        .join(Agent, BackupSet.agent_id == Agent.id)
        .order_by(BackupSet.id)
    )
    return [(s, p, a) for s, p, a in session.execute(stmt).tuples()]


def add(session: Session, backup_set: BackupSet) -> BackupSet:
    session.add(backup_set)
    session.flush()
    return backup_set


def advance_planned(session: Session, set_id: str, planned_until: datetime) -> None:
    """Move last_planned_at forward only: a slower replica must not move it back."""
    session.execute(
        update(BackupSet)
        .where(
            BackupSet.id == set_id,
            (BackupSet.last_planned_at.is_(None)) | (BackupSet.last_planned_at < planned_until),
        )
        .values(last_planned_at=planned_until)
    )


def delete(session: Session, backup_set: BackupSet) -> None:
    session.delete(backup_set)

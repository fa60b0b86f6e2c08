"""Agents (enrolled file servers)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from roost.server.catalog.models import Agent


def get(session: Session, agent_id: str) -> Agent | None:
    return session.get(Agent, agent_id)


def get_by_name(session: Session, org_id: str, name: str) -> Agent | None:
    stmt = select(Agent).where(Agent.org_id == org_id, Agent.name == name)
    return session.scalars(stmt).one_or_none()


def list_for_org(session: Session, org_id: str) -> list[Agent]:
    return list(session.scalars(select(Agent).where(Agent.org_id == org_id).order_by(Agent.name)))


def add(session: Session, agent: Agent) -> Agent:
    session.add(agent)
    session.flush()
    return agent

"""Find a named object of the caller's organisation, or 404 with what to do."""

from __future__ import annotations

from sqlalchemy.orm import Session

from roost.server.catalog.models import Agent, BackupSet, Job, Policy
from roost.server.catalog.queries import agents, jobs, policies, sets
from roost.server.errors import NotFound


def agent(session: Session, org_id: str, name: str) -> Agent:
    found = agents.get_by_name(session, org_id, name)
    if found is None:
        raise NotFound(f"no agent named {name!r}; list them with GET /api/v1/agents")
    return found


def policy(session: Session, org_id: str, name: str) -> Policy:
    found = policies.get_by_name(session, org_id, name)
    if found is None:
        raise NotFound(f"no policy named {name!r}; list them with GET /api/v1/policies")
    return found


def backup_set(session: Session, org_id: str, name: str) -> BackupSet:
    found = sets.get_by_name(session, org_id, name)
    if found is None:
        raise NotFound(f"no backup set named {name!r}; list them with GET /api/v1/sets")
    return found


def job(session: Session, org_id: str, job_id: str) -> Job:
    found = jobs.get(session, job_id)
    if found is None or found.org_id != org_id:
        raise NotFound(f"no job {job_id!r}; list jobs with GET /api/v1/jobs")
    return found


def agent_by_id(session: Session, agent_id: str) -> Agent:
    found = agents.get(session, agent_id)
    if found is None:
        raise NotFound(f"agent {agent_id} no longer exists")
    return found

"""Agents: list with their derived state, disable and enable."""

from __future__ import annotations

from fastapi import APIRouter

from roost.server.api import lookup
from roost.server.api.deps import AdminDep, NowDep, ReadSessionDep, SessionDep, StateDep, ViewerDep
from roost.server.api.schemas import AgentPublic
from roost.server.api.views import agent_public
from roost.server.catalog.queries import agents, audit

router = APIRouter(tags=["agents"])


@router.get("/agents")
def list_agents(
    session: ReadSessionDep, state: StateDep, user: ViewerDep, now: NowDep
) -> list[AgentPublic]:
    offline_after = state.settings.offline_after_seconds
    return [agent_public(a, now, offline_after) for a in agents.list_for_org(session, user.org_id)]


def _set_enabled(
    name: str, enabled: bool, session: SessionDep, state: StateDep, user: AdminDep, now: NowDep
) -> AgentPublic:
    agent = lookup.agent(session, user.org_id, name)
    agent.enabled = enabled
    action = "agent enabled" if enabled else "agent disabled"
    audit.record(session, user.org_id, now, user.username, action, name)
    return agent_public(agent, now, state.settings.offline_after_seconds)


@router.post("/agents/{name}/disable")
def disable_agent(
    name: str, session: SessionDep, state: StateDep, user: AdminDep, now: NowDep
) -> AgentPublic:
    return _set_enabled(name, False, session, state, user, now)


@router.post("/agents/{name}/enable")
def enable_agent(
    name: str, session: SessionDep, state: StateDep, user: AdminDep, now: NowDep
) -> AgentPublic:
    return _set_enabled(name, True, session, state, user, now)

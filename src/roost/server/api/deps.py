"""Typed dependencies: the server state, a catalog session, the clock, and who is asking."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from roost.server import auth
from roost.server.errors import NotAuthenticated, PermissionDenied
from roost.server.state import ServerState

NO_CREDENTIALS = "log in first (POST /api/v1/login) and send `Authorization: Bearer <token>`"
NO_AGENT_CREDENTIALS = "send the agent's credentials: `Authorization: Bearer <agent id>.<secret>`"


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.roost
    return state


StateDep = Annotated[ServerState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    """Commits when the route returns, before the response is sent; rolls back on error."""
    with state.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_read_session(state: StateDep) -> Iterator[Session]:
    """For routes that only read: no write lock on SQLite."""
    with state.db.read_session() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]


def get_now(state: StateDep) -> datetime:
    return state.clock()


NowDep = Annotated[datetime, Depends(get_now)]


@dataclass(frozen=True)
class CurrentUser:
    id: str
    org_id: str
    username: str
    role: str


@dataclass(frozen=True)
class CurrentAgent:
    id: str
    org_id: str
    name: str


def bearer(authorization: Annotated[str | None, Header()] = None) -> str | None:
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


BearerDep = Annotated[str | None, Depends(bearer)]


def current_user(state: StateDep, token: BearerDep) -> CurrentUser:
    if token is None:
        raise NotAuthenticated(NO_CREDENTIALS)
    return user_from_token(state, token)


def user_from_token(state: ServerState, token: str) -> CurrentUser:
    """Shared with the dashboard, which carries the same session token in a cookie."""
    with state.db.read_session() as session:
        user = auth.user_for_token(session, token, state.clock())
        return CurrentUser(user.id, user.org_id, user.username, user.role)


def _role(role: str) -> Callable[[CurrentUser], CurrentUser]:
    def check(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
        if auth.ROLES.index(user.role) < auth.ROLES.index(role):
            raise PermissionDenied(
                f"this needs the {role} role; user {user.username} is {user.role}"
            )
        return user

    return check


ViewerDep = Annotated[CurrentUser, Depends(current_user)]
OperatorDep = Annotated[CurrentUser, Depends(_role("operator"))]
AdminDep = Annotated[CurrentUser, Depends(_role("admin"))]


def current_agent(state: StateDep, token: BearerDep) -> CurrentAgent:
    if token is None:
        raise NotAuthenticated(NO_AGENT_CREDENTIALS)
    with state.db.read_session() as session:
        agent = auth.agent_for_credentials(session, token)
        return CurrentAgent(agent.id, agent.org_id, agent.name)


AgentDep = Annotated[CurrentAgent, Depends(current_agent)]

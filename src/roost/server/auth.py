"""Who is asking: admin sessions (users) and agent credentials, and agent enrollment."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from roost.protocol.agent_api import EnrollRequest, EnrollResponse
from roost.server.catalog.models import Agent, User, UserSession
from roost.server.catalog.queries import agents as agent_queries
from roost.server.catalog.queries import audit, orgs, tokens, users
from roost.server.errors import NotAuthenticated, PermissionDenied
from roost.server.security import (
    hash_password,
    hash_token,
    new_token,
    token_matches,
    verify_password,
)

ROLES = ("viewer", "operator", "admin")
WRONG_LOGIN = "wrong username or password"
BAD_SESSION = "session unknown or expired: log in again (POST /api/v1/login)"
BAD_AGENT = "agent credentials not recognised: enroll the agent again with a new token"
NOT_AN_AGENT = "this route is for agents; send the agent's credentials (agent id.secret)"
TOKEN_UNKNOWN = "enrollment token not recognised: create one with POST /api/v1/tokens"
TOKEN_REVOKED = "enrollment token was revoked: create a new one with POST /api/v1/tokens"
TOKEN_EXPIRED = "enrollment token has expired: create a new one with POST /api/v1/tokens"
TOKEN_USED_UP = "enrollment token has no uses left: create a new one with POST /api/v1/tokens"


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user does not exist, so that both cases take the same time."""
    return hash_password("roost-timing-equaliser")


@dataclass(frozen=True)
class Login:
    token: str
    expires_at: datetime


def login(session: Session, username: str, password: str, now: datetime, hours: float) -> Login:
    user = users.get_by_username(session, username)
    stored = user.password_hash if user is not None else _dummy_hash()
    if not verify_password(password, stored) or user is None:
        raise NotAuthenticated(WRONG_LOGIN)
    token = new_token()
    expires = now + timedelta(hours=hours)
    users.purge_expired_sessions(session, now)
    users.add_session(
        session,
        UserSession(
            user_id=user.id, token_hash=hash_token(token), created_at=now, expires_at=expires
        ),
    )
    audit.record(session, user.org_id, now, user.username, "login", user.username)
    return Login(token, expires)


def user_for_token(session: Session, token: str, now: datetime) -> User:
    if "." in token:
        raise NotAuthenticated("agent credentials cannot be used on admin routes; log in as a user")
    user = users.user_for_session(session, hash_token(token), now)
    if user is None:
        raise NotAuthenticated(BAD_SESSION)
    return user


def agent_for_credentials(session: Session, credentials: str) -> Agent:
    agent_id, dot, secret = credentials.partition(".")
    if not dot:
        raise NotAuthenticated(NOT_AN_AGENT)
    agent = agent_queries.get(session, agent_id)
    if agent is None or not token_matches(secret, agent.secret_hash):
        raise NotAuthenticated(BAD_AGENT)
    return agent


def enroll(session: Session, request: EnrollRequest, now: datetime) -> EnrollResponse:
    """Trade a one-time token for agent credentials; re-enrolling a name replaces its secret."""
    token = tokens.find_by_hash(session, hash_token(request.token))
    if token is None:
        raise NotAuthenticated(TOKEN_UNKNOWN)
    if token.revoked:
        raise PermissionDenied(TOKEN_REVOKED)
    if token.expires_at <= now:
        raise PermissionDenied(TOKEN_EXPIRED)
    if not tokens.consume(session, token.id, now):
        raise PermissionDenied(TOKEN_USED_UP)
    secret = new_token()
    agent = agent_queries.get_by_name(session, token.org_id, request.name)
    action = "agent re-enrolled" if agent is not None else "agent enrolled"
    if agent is None:
        agent = agent_queries.add(
            session, Agent(org_id=token.org_id, name=request.name, secret_hash="", created_at=now)
        )
    agent.secret_hash = hash_token(secret)
    agent.hostname, agent.os, agent.version = request.hostname, request.os, request.version
    audit.record(session, token.org_id, now, f"token {token.id[:8]}", action, request.name)
    org = orgs.get(session, token.org_id)
    return EnrollResponse(agent_id=agent.id, secret=secret, organisation=org.name if org else "")

"""POST /login and /logout: admin sessions."""

from __future__ import annotations

from fastapi import APIRouter, status

from roost.server import auth
from roost.server.api.deps import BearerDep, NowDep, SessionDep, StateDep
from roost.server.api.schemas import LoginRequest, LoginResponse
from roost.server.catalog.queries import users
from roost.server.security import hash_token

router = APIRouter(tags=["auth"])


@router.post("/login")
def login(body: LoginRequest, session: SessionDep, state: StateDep, now: NowDep) -> LoginResponse:
    hours = state.settings.session_hours
    result = auth.login(session, body.username, body.password, now, hours)
    return LoginResponse(token=result.token, expires_at=result.expires_at)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(session: SessionDep, token: BearerDep) -> None:
    if token is not None:
        users.delete_session(session, hash_token(token))

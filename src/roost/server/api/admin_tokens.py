"""Enrollment tokens: create (shown once), list, revoke."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from roost.server.api.deps import AdminDep, NowDep, ReadSessionDep, SessionDep
from roost.server.api.schemas import TokenCreate, TokenCreated, TokenPublic
from roost.server.catalog.models import EnrollmentToken
from roost.server.catalog.queries import audit, tokens
from roost.server.errors import NotFound
from roost.server.security import hash_token, new_token

router = APIRouter(tags=["tokens"])


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(
    body: TokenCreate, session: SessionDep, user: AdminDep, now: NowDep
) -> TokenCreated:
    secret = new_token(24)
    row = tokens.add(
        session,
        EnrollmentToken(
            org_id=user.org_id,
            token_hash=hash_token(secret),
            note=body.note,
            created_by=user.username,
            created_at=now,
            expires_at=now + timedelta(seconds=body.expires_in),
            uses_left=body.uses,
            revoked=False,
        ),
    )
    audit.record(session, user.org_id, now, user.username, "token created", row.id)
    return TokenCreated(id=row.id, token=secret, expires_at=row.expires_at, uses_left=row.uses_left)


@router.get("/tokens")
def list_tokens(session: ReadSessionDep, user: AdminDep) -> list[TokenPublic]:
    return [
        TokenPublic(
            id=t.id,
            expires_at=t.expires_at,
            uses_left=t.uses_left,
            revoked=t.revoked,
            created_at=t.created_at,
            note=t.note,
        )
        for t in tokens.list_for_org(session, user.org_id)
    ]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: str, session: SessionDep, user: AdminDep, now: NowDep) -> None:
    token = tokens.get(session, user.org_id, token_id)
    if token is None:
        raise NotFound(f"no enrollment token {token_id!r}; list them with GET /api/v1/tokens")
    tokens.revoke(session, token)
    audit.record(session, user.org_id, now, user.username, "token revoked", token_id)

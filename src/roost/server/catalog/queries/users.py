"""Users and their login sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from roost.server.catalog.models import User, UserSession


def get_by_username(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def add(session: Session, user: User) -> User:
    session.add(user)
    session.flush()
    return user


def add_session(session: Session, row: UserSession) -> None:
    session.add(row)


def user_for_session(session: Session, token_hash: str, now: datetime) -> User | None:
    stmt = (
        select(User)
        .join(UserSession, UserSession.user_id == User.id)
        .where(UserSession.token_hash == token_hash, UserSession.expires_at > now)
    )
    return session.scalars(stmt).one_or_none()


def delete_session(session: Session, token_hash: str) -> None:
    session.execute(delete(UserSession).where(UserSession.token_hash == token_hash))


def purge_expired_sessions(session: Session, now: datetime) -> None:
    session.execute(delete(UserSession).where(UserSession.expires_at <= now))

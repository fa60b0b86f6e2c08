"""First start: the organisation `default`, its repository and the user `admin`. Idempotent."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from roost.engine.repository import Repository
from roost.server.catalog.db import Database
from roost.server.catalog.models import Organisation, User
from roost.server.catalog.queries import orgs, users
from roost.server.catalog.types import new_id
from roost.server.clock import Clock
from roost.server.orgrepo import PASSPHRASE_PURPOSE, RECOVERY_PURPOSE, org_prefix
from roost.server.security import SecretBox, hash_password
from roost.server.storage_prefix import PrefixedBackend
from roost.storage.base import Backend

DEFAULT_ORG = "default"
ADMIN_USER = "admin"
ADMIN_PASSWORD_ENV = "ROOST_ADMIN_PASSWORD"


@dataclass(frozen=True)
class BootstrapResult:
    org_id: str
    created: bool
    admin_password: str | None  # set only when generated now: print it once


def bootstrap(db: Database, storage: Backend, box: SecretBox, clock: Clock) -> BootstrapResult:
    existing = _default_org_id(db)
    if existing is not None:
        return BootstrapResult(existing, created=False, admin_password=None)
    org_id = new_id()
    passphrase = secrets.token_urlsafe(32)
    # The repository first: a crash before the catalog row leaves an unused prefix, never a
    # catalog that points at a repository that does not exist.
    _, recovery_key = Repository.init(PrefixedBackend(storage, org_prefix(org_id)), passphrase)
    password = os.environ.get(ADMIN_PASSWORD_ENV) or secrets.token_urlsafe(12)
    now = clock()
    org = Organisation(
        id=org_id,
        name=DEFAULT_ORG,
        created_at=now,
        repo_passphrase_wrapped=box.wrap(passphrase, PASSPHRASE_PURPOSE),
        recovery_key_wrapped=box.wrap(recovery_key, RECOVERY_PURPOSE),
    )
    admin = User(
        org_id=org_id,
        username=ADMIN_USER,
        password_hash=hash_password(password),
        role="admin",
        created_at=now,
    )
    try:
        with db.session() as session:
            orgs.add(session, org)
            users.add(session, admin)
    except IntegrityError:
        # Another replica finished its first start meanwhile: use its organisation.
        winner = _default_org_id(db)
        assert winner is not None
        return BootstrapResult(winner, created=False, admin_password=None)
    generated = None if os.environ.get(ADMIN_PASSWORD_ENV) else password
    return BootstrapResult(org_id, created=True, admin_password=generated)


def _default_org_id(db: Database) -> str | None:
    with db.read_session() as session:
        org = orgs.get_by_name(session, DEFAULT_ORG)
        return org.id if org is not None else None

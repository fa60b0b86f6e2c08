"""Each organisation's repository: a prefix of the server's storage, opened with its key."""

from __future__ import annotations

import threading

from roost.engine.repository import Repository
from roost.server.catalog.db import Database
from roost.server.catalog.queries import orgs
from roost.server.errors import NotFound
from roost.server.security import SecretBox
from roost.server.storage_prefix import PrefixedBackend
from roost.storage.base import Backend

PASSPHRASE_PURPOSE = "repository passphrase"
RECOVERY_PURPOSE = "recovery key"


def org_prefix(org_id: str) -> str:
    return f"orgs/{org_id}/"


class OrgRepositories:
    """Opened repositories, cached: opening runs a memory-hard KDF, once per process."""

    def __init__(self, storage: Backend, db: Database, secrets: SecretBox) -> None:
        self.storage = storage
        self._db = db
        self._secrets = secrets
        self._opened: dict[str, Repository] = {}
        self._lock = threading.Lock()

    def backend(self, org_id: str) -> PrefixedBackend:
        return PrefixedBackend(self.storage, org_prefix(org_id))

    def repository(self, org_id: str) -> Repository:
        with self._lock:
            repo = self._opened.get(org_id)
            if repo is None:
                repo = Repository.open(self.backend(org_id), self._passphrase(org_id))
                self._opened[org_id] = repo
            return repo

    def _passphrase(self, org_id: str) -> str:
        with self._db.read_session() as session:
            org = orgs.get(session, org_id)
            if org is None:
                raise NotFound(f"organisation {org_id} does not exist")
            wrapped = org.repo_passphrase_wrapped
        return self._secrets.unwrap(wrapped, PASSPHRASE_PURPOSE)

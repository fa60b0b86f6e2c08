"""Each organisation's repository: a prefix of the server's storage, opened with its key."""

from __future__ import annotations

import logging
import threading

from roost.engine.repository import Repository
from roost.errors import RoostError
from roost.server.catalog.db import Database
from roost.server.catalog.queries import orgs
from roost.server.errors import NotFound
from roost.server.security import SecretBox
from roost.server.storage_prefix import PrefixedBackend
from roost.storage.base import Backend

log = logging.getLogger(__name__)

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
        self.opening: threading.Thread | None = None  # the latest open_all_in_background

    def backend(self, org_id: str) -> PrefixedBackend:
        return PrefixedBackend(self.storage, org_prefix(org_id))

    def repository(self, org_id: str) -> Repository:
        with self._lock:
            repo = self._opened.get(org_id)
            if repo is None:
                repo = Repository.open(self.backend(org_id), self._passphrase(org_id))
                self._opened[org_id] = repo
            return repo

    def open_all_in_background(self) -> threading.Thread:
        """Open every organisation's repository now, in a daemon thread.

        The first job after a start would otherwise wait for the key derivation (Argon2id,
        ~0.15 s) while its agent asks for the key; a repository that cannot be opened yet
        (storage down) is opened, or reported, when a job asks for it.
        """
        thread = threading.Thread(target=self._open_all, name="roost-open-repos", daemon=True)
        thread.start()
        self.opening = thread
        return thread

    def _open_all(self) -> None:
        with self._db.read_session() as session:
            org_ids = [org.id for org in orgs.list_all(session)]
        for org_id in org_ids:
            try:
                self.repository(org_id)
            except RoostError as exc:  # storage down, say: reported when a job needs it
                log.info("repository of organisation %s not opened at start: %s", org_id, exc)

    def _passphrase(self, org_id: str) -> str:
        with self._db.read_session() as session:
            org = orgs.get(session, org_id)
            if org is None:
                raise NotFound(f"organisation {org_id} does not exist")
            wrapped = org.repo_passphrase_wrapped
        return self._secrets.unwrap(wrapped, PASSPHRASE_PURPOSE)

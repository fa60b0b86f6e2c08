"""Leases: how a running backup tells prune "I may still reference what you tombstone".

A lease is ``leases/<random id>``, a crypto object (aad ``b"lease"``) holding JSON
``{"kind": "backup"|"prune", "host": .., "pid": .., "started_ns": .., "refreshed_ns": ..}``.
Its owner rewrites it every ``refresh_seconds``; a lease not refreshed for ``ttl_seconds`` is
dead (its owner crashed). Leases are the one kind of object that is overwritten.

The rule prune relies on: a backup writes its lease *before* it loads the index, so any backup
that could have missed a tombstone has a lease that started before the tombstone was written.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass

from roost.engine.repository import Repository
from roost.errors import CorruptObject, ObjectNotFound

LEASE_AAD = b"lease"
DEFAULT_TTL = 15 * 60.0
DEFAULT_REFRESH = 60.0


@dataclass(frozen=True)
class LeaseInfo:
    id: str
    kind: str
    host: str
    pid: int
    started_ns: int
    refreshed_ns: int

    def alive(self, now_ns: int, ttl_seconds: float) -> bool:
        return now_ns - self.refreshed_ns < ttl_seconds * 1e9


class Lease:
    """A held lease, refreshed by a daemon thread until released."""

    def __init__(self, repo: Repository, kind: str, refresh_seconds: float = DEFAULT_REFRESH):
        self.repo = repo
        self.id = os.urandom(16).hex()
        self.kind = kind
        self.started_ns = time.time_ns()
        self._stop = threading.Event()
        self._refresh_seconds = refresh_seconds
        self._thread: threading.Thread | None = None

    def _document(self) -> bytes:
        doc = {
            "kind": self.kind,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_ns": self.started_ns,
            "refreshed_ns": time.time_ns(),
        }
        return self.repo.key.encrypt(json.dumps(doc).encode(), LEASE_AAD)

    def acquire(self) -> Lease:
        self.repo.backend.put(f"leases/{self.id}", self._document())
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="roost-lease")
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_seconds):
            try:
                self.repo.backend.put(f"leases/{self.id}", self._document(), overwrite=True)
            except Exception:
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(ObjectNotFound):
            self.repo.backend.delete(f"leases/{self.id}")

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def list_leases(repo: Repository) -> list[LeaseInfo]:
    found = []
    for info in repo.backend.list("leases/"):
        lease_id = info.key.split("/", 1)[1]
        try:
            doc = json.loads(repo.key.decrypt(repo.backend.get(info.key), LEASE_AAD, "lease"))
        except (ObjectNotFound, CorruptObject, ValueError):
            continue  # released meanwhile, or garbage: neither protects anything
        found.append(
            LeaseInfo(
                lease_id,
                str(doc["kind"]),
                str(doc["host"]),
                int(doc["pid"]),
                int(doc["started_ns"]),
                int(doc["refreshed_ns"]),
            )
        )
    return found

"""What one server process holds: settings, catalog, secrets, repositories, clock, wake-ups.

Kept on ``app.state.roost``; nothing here is the only copy of shared state (that lives in
the catalog and the storage), so any number of replicas can run side by side.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from roost.server.bootstrap import BootstrapResult
from roost.server.catalog.db import Database
from roost.server.clock import Clock
from roost.server.config import ServerSettings
from roost.server.orgrepo import OrgRepositories
from roost.server.security import SecretBox


class Wakeups:
    """Wakes the requests waiting on a key (an agent's long-poll when this process queues a
    job for it; a client waiting for a job to end when the job ends here).

    What other replicas do is found by the waiting request's periodic re-check instead.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._lock = threading.Lock()

    def register(self, key: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiting.setdefault(key, set()).add((asyncio.get_running_loop(), event))
        return event

    def unregister(self, key: str, event: asyncio.Event) -> None:
        with self._lock:
            waiting = self._waiting.get(key, set())
            waiting.difference_update({item for item in waiting if item[1] is event})
            if not waiting:
                self._waiting.pop(key, None)

    def notify(self, key: str) -> None:
        """Safe from any thread (routes run in a thread pool)."""
        with self._lock:
            waiting = list(self._waiting.get(key, ()))
        for loop, event in waiting:
            loop.call_soon_threadsafe(event.set)


@dataclass
class ServerState:
    settings: ServerSettings
    db: Database
    secrets: SecretBox
    repos: OrgRepositories
    clock: Clock
    boot: BootstrapResult
    wakeups: Wakeups = field(default_factory=Wakeups)  # by agent id: a job was queued
    job_ends: Wakeups = field(default_factory=Wakeups)  # by job id: the job ended
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def org_id(self) -> str:
        """The organisation requests act on (one per server, for now)."""
        return self.boot.org_id

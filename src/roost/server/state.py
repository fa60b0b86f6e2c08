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


class AgentWakeups:
    """Wakes an agent's waiting long-poll when this process queues a job for it.

    Other replicas' jobs are found by the poll's periodic re-check instead.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._lock = threading.Lock()

    def register(self, agent_id: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiting.setdefault(agent_id, set()).add((asyncio.get_running_loop(), event))
        return event

    def unregister(self, agent_id: str, event: asyncio.Event) -> None:
        with self._lock:
            waiting = self._waiting.get(agent_id, set())
            waiting.difference_update({item for item in waiting if item[1] is event})
            if not waiting:
                self._waiting.pop(agent_id, None)

    def notify(self, agent_id: str) -> None:
        """Safe from any thread (routes run in a thread pool)."""
        with self._lock:
            waiting = list(self._waiting.get(agent_id, ()))
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
    wakeups: AgentWakeups = field(default_factory=AgentWakeups)
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def org_id(self) -> str:
        """The organisation requests act on (one per server, for now)."""
        return self.boot.org_id

"""What one server process holds: settings, catalog, secrets, repositories, clock, wake-ups.

Kept on ``app.state.roost``; nothing here is the only copy of shared state (that lives in
the catalog and the storage), so any number of replicas can run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
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

    @contextlib.asynccontextmanager
    async def rounds(
        self, key: str, seconds: float, recheck: float
    ) -> AsyncIterator[AsyncIterator[None]]:
        """The rounds of a request that waits up to ``seconds`` for something about ``key``.

        A round comes at once, then each time ``key`` is notified or ``recheck`` seconds pass
        (for what another replica did), until ``seconds`` have passed: in each the caller
        looks, and stops early when it found what it waits for. Registered for the block.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        event = self.register(key)

        async def each() -> AsyncIterator[None]:
            while True:
                event.clear()  # before the caller looks: a notice meanwhile is not lost
                yield
                left = deadline - loop.time()
                if left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(recheck, left))

        try:
            yield each()
        finally:
            self.unregister(key, event)

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

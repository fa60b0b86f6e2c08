"""What a job needs from the agent: the server connection, this machine, the repository.

The repository key arrives over TLS for each job (``GET /repository``) and lives only in this
process's memory; storage is the server's data API, rate limited by the job's policy.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from roost.agent.api import ServerApi
from roost.agent.platform import Platform
from roost.agent.remote_storage import remote_storage
from roost.agent.snapshots import SnapshotProvider
from roost.agent.throughput import HISTORY_NAME, ThroughputHistory
from roost.agent.write_behind import OnAccepted
from roost.engine.crypto import Key, MasterKey
from roost.engine.repository import RepoConfig, Repository


@dataclass
class JobContext:
    """What every job shares: the server, this machine, and the knobs tests turn."""

    client: httpx.Client  # base_url = the agent API
    home: Path
    platform: Platform
    providers: list[SnapshotProvider]
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic
    progress_interval: float = 1.0
    archiver_workers: int | None = None
    retry_sleep: Callable[[float], None] = time.sleep  # storage retries
    final_retry_seconds: float = 3600.0  # how long the final event is retried
    history: ThroughputHistory = field(init=False)  # one per agent: jobs share its lock

    def __post_init__(self) -> None:
        self.history = ThroughputHistory(self.home / HISTORY_NAME)

    @property
    def api(self) -> ServerApi:
        return ServerApi(self.client)


def open_repository(
    ctx: JobContext,
    bandwidth_limit: int | None,
    on_send: Callable[[int], None] | None = None,
    on_pack_accepted: OnAccepted | None = None,
) -> Repository:
    """The organisation's repository over the data API; the key is kept in memory only.
    ``on_send`` sees every piece of an upload, ``on_pack_accepted`` every pack the
    write-behind uploads accept (see remote_storage.py and write_behind.py)."""
    material = ctx.api.repository()
    key = Key(MasterKey.from_json(material.master_key))
    config = RepoConfig.from_json(json.dumps(material.config).encode())
    backend = remote_storage(
        ctx.client,
        ctx.api.base_url,
        bandwidth_limit=bandwidth_limit,
        retry_sleep=ctx.retry_sleep,
        on_send=on_send,
        on_pack_accepted=on_pack_accepted,
    )
    return Repository(backend, key, config)

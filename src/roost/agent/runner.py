"""The agent's main loop: connect out, long-poll for jobs, run them, keep polling.

The long-poll (``POST /poll``) is the heartbeat: every poll says who the agent is, which boot
it is in (``boot_id``: a reboot during a job makes the server mark that job aborted) and which
jobs it is running (a dispatched job missing from that list was lost). Network failures are
retried with exponential backoff and jitter (capped at 60 s), and logged once per change of
state, not once per attempt: an agent whose server is down for a weekend writes two lines.

Jobs run in worker threads while polling goes on: one job at a time per backup set, at most
``max_parallel`` at once; others wait in order. At start the agent deletes snapshots a crash
left behind. ``stop()`` (Ctrl-C, SIGTERM) makes running jobs end ``aborted`` and returns.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from roost import __version__
from roost.agent.api import ServerApi
from roost.agent.config import AgentConfig
from roost.agent.context import JobContext
from roost.agent.errors import AgentError, FingerprintMismatch, ServerRefused, ServerUnreachable
from roost.agent.jobs import execute_job
from roost.agent.platform import Platform, current_platform
from roost.agent.snapshots import SnapshotProvider, cleanup_all, default_providers
from roost.agent.transport import connect
from roost.protocol.agent_api import JobAssignment, PollRequest

log = logging.getLogger("roost.agent")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
MIN_POLL_INTERVAL = 1.0  # a server that answers polls at once must not make us spin
FATAL_AT_START = (401,)  # wrong credentials: retrying cannot help, say so at once


class Backoff:
    """Exponential delays with jitter in [50 %, 100 %], so agents do not reconnect in step."""

    def __init__(
        self, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP, rng: random.Random | None = None
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt += 1
        return ceiling * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class JobSlots:
    """Runs jobs in threads: one per backup set at a time, ``max_parallel`` in all."""

    def __init__(self, run: Callable[[JobAssignment], object], max_parallel: int = 2) -> None:
        self._run_job = run
        self._max = max(1, max_parallel)
        self._lock = threading.Condition()
        self._queued: list[JobAssignment] = []
        self._running: dict[str, JobAssignment] = {}

    def submit(self, job: JobAssignment) -> None:
        with self._lock:
            if job.id in self._running or any(q.id == job.id for q in self._queued):
                return  # the same assignment twice must not run twice
            self._queued.append(job)
            self._start_ready()

    def active_ids(self) -> list[str]:
        """Running and waiting jobs: both are this agent's, as far as the server knows."""
        with self._lock:
            return [*self._running, *(job.id for job in self._queued)]

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self._running, timeout)

    def _start_ready(self) -> None:
        busy = {job.set_id for job in self._running.values()}
        for job in list(self._queued):
            if len(self._running) >= self._max:
                return
            if job.set_id in busy:
                continue
            self._queued.remove(job)
            busy.add(job.set_id)
            self._running[job.id] = job
            name = f"roost-job-{job.id}"
            threading.Thread(target=self._work, args=(job,), name=name, daemon=True).start()

    def _work(self, job: JobAssignment) -> None:
        try:
            self._run_job(job)
        except Exception:  # execute_job reports its own failures; this is a last resort
            log.exception("job %s crashed", job.id)
        finally:
            with self._lock:
                del self._running[job.id]
                self._start_ready()
                self._lock.notify_all()


def pinned_client(config: AgentConfig) -> httpx.Client:
    if config.fingerprint is None and not config.server_url.startswith("http://"):
        raise AgentError(
            "agent.json pins no server certificate fingerprint; enroll the agent again"
        )
    return connect(config.server_url, config.fingerprint, authorization=config.authorization).client


class AgentRunner:
    def __init__(
        self,
        config: AgentConfig,
        home: Path,
        *,
        platform: Platform | None = None,
        providers: list[SnapshotProvider] | None = None,
        client_factory: Callable[[AgentConfig], httpx.Client] = pinned_client,
        job_runner: Callable[[httpx.Client, JobAssignment], object] | None = None,
        wait: Callable[[float], bool] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_parallel: int = 2,
        poll_wait: float = 25.0,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.home = home
        self.platform = platform or current_platform()
        self.providers = (
            providers if providers is not None else default_providers(home / "snapshots")
        )
        self.stop_event = threading.Event()
        self._client_factory = client_factory
        self._job_runner = job_runner or self._execute
        self._wait = wait if wait is not None else self.stop_event.wait
        self._clock = clock
        self.backoff = Backoff(rng=rng)
        self.slots = JobSlots(self._run_job, max_parallel)
        self.poll_wait = poll_wait
        self.shutdown_timeout = shutdown_timeout
        self.client: httpx.Client | None = None  # for polling; rebuilt after network failures
        self._job_client: httpx.Client | None = None  # the last client that polled fine
        self._state = "starting"  # "connected" or the kind of the last failure
        self._was_connected = False

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        """Poll until ``stop()`` or Ctrl-C; then let running jobs abort and return."""
        log.info(
            "agent %s starting (Roost %s, %s)", self.config.name, __version__, self.platform.os_name
        )
        self.cleanup_leftovers()
        try:
            while not self.stop_event.is_set():
                delay = self.cycle()
                if delay > 0 and self._wait(delay):
                    break
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            self.shutdown()

    def stop(self) -> None:
        self.stop_event.set()

    def shutdown(self) -> None:
        self.stop_event.set()
        if self.slots.active_ids():
            log.info("waiting up to %.0f s for running jobs to stop", self.shutdown_timeout)
            self.slots.wait_idle(self.shutdown_timeout)
        for client in {self.client, self._job_client}:
            if client is not None:
                client.close()
        log.info("agent stopped")

    def cleanup_leftovers(self) -> list[str]:
        lines = cleanup_all(self.providers)
        for line in lines:
            log.info("%s", line)
        return lines

    # -- one poll ---------------------------------------------------------------------------

    def cycle(self) -> float:
        """Connect if needed and poll once; return how long to wait before the next cycle."""
        started = self._clock()
        first = not self._was_connected  # answered at once by design (see poll)
        try:
            jobs = self.poll()
        except AgentError as exc:  # ServerRefused and ServerUnreachable included
            self._failed(exc)
            return self.backoff.next_delay()
        self._connected()
        if self._job_client is not self.client:
            old, self._job_client = self._job_client, self.client
            if old is not None and not self.slots.active_ids():
                old.close()  # with jobs running it may be in use; the collector closes it
        for job in jobs:
            log.info("job %s assigned: %s of set %s", job.id, job.kind, job.set_name)
            self.slots.submit(job)
        if jobs or first:  # after the first poll, the first long one: a job asked for now
            return 0.0  # must not wait a second for it (the first backup after a start did)
        return max(0.0, MIN_POLL_INTERVAL - (self._clock() - started))

    def poll(self) -> list[JobAssignment]:
        if self.client is None:
            self.client = self._client_factory(self.config)
        request = PollRequest(
            boot_id=self.platform.boot_id(),
            hostname=self.platform.hostname,
            os=self.platform.os_name,
            version=__version__,
            running_jobs=self.slots.active_ids()[:100],
            # The first poll returns at once, so a bad pin or credentials show up at start.
            wait_seconds=self.poll_wait if self._was_connected else 0.0,
        )
        return ServerApi(self.client).poll(request).jobs

    def _failed(self, exc: AgentError) -> None:
        if not self._was_connected and (
            isinstance(exc, FingerprintMismatch)
            or (isinstance(exc, ServerRefused) and exc.status in FATAL_AT_START)
        ):
            raise exc  # misconfiguration: tell whoever started the agent, now
        if isinstance(exc, ServerUnreachable | FingerprintMismatch) and self.client is not None:
            # Reconnect from scratch: the certificate is fetched and checked against the pin
            # again, so a replaced certificate reads as a mismatch, not a vague TLS error.
            if self.client is not self._job_client:
                self.client.close()
            self.client = None
        kind = f"{type(exc).__name__}:{getattr(exc, 'status', '')}"
        if kind != self._state:
            log.warning("%s; retrying with backoff (at most every %.0f s)", exc, BACKOFF_CAP)
            self._state = kind

    def _connected(self) -> None:
        if self._state != "connected":
            again = " again" if self._was_connected else ""
            log.info("connected%s to %s as %s", again, self.config.server_url, self.config.name)
            self._state = "connected"
            self._was_connected = True
        self.backoff.reset()

    # -- jobs -------------------------------------------------------------------------------

    def _run_job(self, job: JobAssignment) -> object:
        client = self._job_client
        assert client is not None  # jobs arrive only through a successful poll
        return self._job_runner(client, job)

    def _execute(self, client: httpx.Client, job: JobAssignment) -> str:
        ctx = JobContext(client, self.home, self.platform, self.providers, stop=self.stop_event)
        return execute_job(ctx, job)

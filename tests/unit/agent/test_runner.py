"""AgentRunner: polling as heartbeat, backoff and its logging, job slots, start and stop."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.unit.agent.fake_server import AGENT_ID, SECRET, FakeServer, detail

from roost import __version__
from roost.agent.config import AgentConfig
from roost.agent.errors import FingerprintMismatch, ServerUnreachable
from roost.agent.platform import fake_platform
from roost.agent.runner import AgentRunner, Backoff, JobSlots
from roost.agent.snapshots import PreparedSnapshot
from roost.protocol.agent_api import JobAssignment

CONFIG = AgentConfig("https://roost.test", AGENT_ID, SECRET, "AB:" * 31 + "AB", "fs1")


def job(job_id: str, set_id: str = "set-1") -> JobAssignment:
    return JobAssignment(id=job_id, kind="backup", set_id=set_id, set_name=set_id, paths=["/x"])


class Waits(list[float]):
    def __call__(self, seconds: float) -> bool:
        self.append(seconds)
        return False


class LeftoverProvider:
    name = "fakesnap"

    def __init__(self) -> None:
        self.cleaned = 0

    def unsupported_reason(self, paths: list[str]) -> str | None:
        return "never used here"

    def applicable(self, paths: list[str]) -> bool:
        return False

    def create(self, paths: list[str], job_id: str) -> PreparedSnapshot:
        raise AssertionError("not used")

    def validate(self, snap: PreparedSnapshot) -> None:
        return None

    def delete(self, snap: PreparedSnapshot) -> None:
        return None

    def cleanup_leftovers(self) -> list[str]:
        self.cleaned += 1
        return ["snap-crashed-job"]


class BlockingJobs:
    """A job runner whose jobs run until released, recording the order they started in."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release: dict[str, threading.Event] = {}
        self.changed = threading.Condition()

    def __call__(self, client: httpx.Client, job: JobAssignment) -> None:
        gate = self.release.setdefault(job.id, threading.Event())
        with self.changed:
            self.started.append(job.id)
            self.changed.notify_all()
        gate.wait(10)

    def finish(self, job_id: str) -> None:
        self.release.setdefault(job_id, threading.Event()).set()

    def wait_started(self, count: int) -> list[str]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.started) >= count, 5)
            return list(self.started)


def runner(
    server: FakeServer,
    tmp_path: Path,
    *,
    factory: Callable[[AgentConfig], httpx.Client] | None = None,
    jobs: BlockingJobs | None = None,
    waits: Waits | None = None,
    providers: list[LeftoverProvider] | None = None,
) -> AgentRunner:
    return AgentRunner(
        CONFIG,
        tmp_path,
        platform=fake_platform(hostname="fs1", boot_id="boot-42"),
        providers=list(providers or []),
        client_factory=factory or (lambda _config: server.client()),
        job_runner=jobs,
        wait=waits if waits is not None else Waits(),
        rng=random.Random(1),
        clock=lambda: 0.0,
    )


def test_poll_says_who_and_what_is_running(tmp_path: Path) -> None:
    server = FakeServer()
    jobs = BlockingJobs()
    agent = runner(server, tmp_path, jobs=jobs)
    server.poll_answers.append([job("j1")])
    assert agent.cycle() == 0.0
    jobs.wait_started(1)
    assert agent.cycle() == 1.0  # nothing assigned and the answer came at once: pause
    first, second = server.polls
    assert (first.boot_id, first.hostname, first.os, first.version) == (
        "boot-42",
        "fs1",
        "Linux test",
        __version__,
    )
    assert (first.running_jobs, second.running_jobs) == ([], ["j1"])
    # the first poll returns at once (a bad pin or credentials show at start), later ones wait
    assert (first.wait_seconds, second.wait_seconds) == (0.0, 25.0)
    jobs.finish("j1")
    assert agent.slots.wait_idle(5)


def test_one_job_per_set_and_a_limit_on_parallel_jobs() -> None:
    jobs = BlockingJobs()
    slots = JobSlots(lambda j: jobs(httpx.Client(), j), max_parallel=2)
    for j in (job("a1", "A"), job("a2", "A"), job("b1", "B"), job("c1", "C")):
        slots.submit(j)
    assert sorted(jobs.wait_started(2)) == ["a1", "b1"]  # threads: either may start first
    assert slots.active_ids() == ["a1", "b1", "a2", "c1"]  # waiting ones are ours too
    jobs.finish("a1")
    assert jobs.wait_started(3)[2] == "a2"  # a2 was first in line and A is free
    jobs.finish("b1")
    assert jobs.wait_started(4)[3] == "c1"
    jobs.finish("a2")
    jobs.finish("c1")
    assert slots.wait_idle(5)
    assert slots.active_ids() == []


def test_the_same_assignment_twice_runs_once() -> None:
    jobs = BlockingJobs()
    slots = JobSlots(lambda j: jobs(httpx.Client(), j))
    slots.submit(job("a1"))
    slots.submit(job("a1"))
    jobs.wait_started(1)
    assert slots.active_ids() == ["a1"]
    jobs.finish("a1")
    assert slots.wait_idle(5)


def test_unreachable_server_backs_off_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer()
    failures = [0]

    def flaky(_config: AgentConfig) -> httpx.Client:
        if failures[0] < 4:
            failures[0] += 1
            raise ServerUnreachable("cannot reach the server at https://roost.test: timed out")
        return server.client()

    agent = runner(server, tmp_path, factory=flaky)
    caplog.set_level(logging.INFO, "roost.agent")
    delays = [agent.cycle() for _ in range(5)]
    for attempt, delay in enumerate(delays[:4]):
        assert 2.0**attempt * 0.5 <= delay <= 2.0**attempt
    assert delays[4] == 0.0  # connected at last: the long poll follows at once
    messages = [r.getMessage() for r in caplog.records]
    assert (
        messages.count(
            "cannot reach the server at https://roost.test: timed out; retrying with backoff "
            "(at most every 60 s)"
        )
        == 1
    )
    assert messages[-1] == "connected to https://roost.test as fs1"
    assert agent.backoff.attempt == 0


def test_backoff_is_capped_with_jitter() -> None:
    backoff = Backoff(rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(30.0 <= d <= 60.0 for d in delays[6:])
    assert max(delays) <= 60.0


def test_wrong_fingerprint_at_start_is_fatal(tmp_path: Path) -> None:
    def mismatch(_config: AgentConfig) -> httpx.Client:
        raise FingerprintMismatch("the server's certificate fingerprint X does not match")

    agent = runner(FakeServer(), tmp_path, factory=mismatch)
    with pytest.raises(FingerprintMismatch):
        agent.run()


def test_rejected_credentials_at_start_are_fatal(tmp_path: Path) -> None:
    server = FakeServer()
    agent = runner(server, tmp_path, factory=lambda _c: server.client("Bearer nobody.x"))
    with pytest.raises(Exception, match=r"the server refused the poll \(HTTP 401\)"):
        agent.run()


def test_later_refusals_are_retried_and_logged_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer()
    agent = runner(server, tmp_path)
    caplog.set_level(logging.INFO, "roost.agent")
    assert agent.cycle() == 0.0  # the first poll answers at once: the long poll follows
    server.before = lambda _r: detail(503, "maintenance")
    agent.cycle()
    agent.cycle()
    server.before = lambda _r: detail(401, "agent deleted")
    agent.cycle()
    server.before = None
    assert agent.cycle() == 1.0
    assert [r.getMessage() for r in caplog.records] == [
        "connected to https://roost.test as fs1",
        "the server refused the poll (HTTP 503): maintenance; retrying with backoff "
        "(at most every 60 s)",
        "the server refused the poll (HTTP 401): agent deleted; retrying with backoff "
        "(at most every 60 s)",
        "connected again to https://roost.test as fs1",
    ]


def test_network_failure_rebuilds_the_client(tmp_path: Path) -> None:
    server = FakeServer()
    built: list[httpx.Client] = []

    def factory(_config: AgentConfig) -> httpx.Client:
        built.append(server.client())
        return built[-1]

    agent = runner(server, tmp_path, factory=factory)
    agent.cycle()

    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("reset", request=request)

    server.before = drop
    agent.cycle()
    server.before = None
    agent.cycle()
    assert len(built) == 2  # re-fetching the certificate re-checks the pin


def test_start_removes_leftover_snapshots_and_stop_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer()
    provider = LeftoverProvider()
    agent = runner(server, tmp_path, providers=[provider])
    polls = [0]

    def stop_after_two(_request: httpx.Request) -> None:
        polls[0] += 1
        if polls[0] == 2:
            agent.stop()

    server.before = stop_after_two
    caplog.set_level(logging.INFO, "roost.agent")
    agent.run()
    assert provider.cleaned == 1
    messages = [r.getMessage() for r in caplog.records]
    assert "removed leftover fakesnap snapshot snap-crashed-job" in messages
    assert messages[-1] == "agent stopped"
    assert len(server.polls) == 2


def test_ctrl_c_lets_running_jobs_abort_then_returns(tmp_path: Path) -> None:
    server = FakeServer()
    stopped = threading.Event()

    def job_until_stopped(_client: httpx.Client, _job: JobAssignment) -> None:
        stopped.wait(5)

    agent = AgentRunner(
        CONFIG,
        tmp_path,
        platform=fake_platform(),
        providers=[],
        client_factory=lambda _c: server.client(),
        job_runner=job_until_stopped,
        wait=Waits(),
        clock=lambda: 0.0,
    )
    server.poll_answers.append([job("j1")])
    calls = [0]

    def interrupt_second_poll(_request: httpx.Request) -> None:
        calls[0] += 1
        if calls[0] == 2:
            threading.Timer(0.2, stopped.set).start()  # the job notices the stop a bit later
            raise KeyboardInterrupt

    server.before = interrupt_second_poll
    agent.run()
    assert agent.stop_event.is_set()
    assert agent.slots.active_ids() == []


def test_assigned_backup_runs_end_to_end(tmp_path: Path) -> None:
    server = FakeServer()
    src = tmp_path / "data"
    src.mkdir()
    (src / "f.txt").write_bytes(b"hello")
    home = tmp_path / "home"
    home.mkdir()
    agent = AgentRunner(
        CONFIG,
        home,
        platform=fake_platform(),
        providers=[],
        client_factory=lambda _c: server.client(),
        wait=Waits(),
        clock=lambda: 0.0,
    )
    server.poll_answers.append(
        [
            JobAssignment(
                id="j1",
                kind="backup",
                set_id="s",
                set_name="s",
                paths=[str(src)],
                snapshot_mode="never",
            )
        ]
    )
    agent.cycle()
    assert agent.slots.wait_idle(30)
    assert server.states("j1")[0] == "running"
    assert server.states("j1")[-1] == "succeeded"


def test_the_first_poll_is_followed_by_a_long_poll_at_once(tmp_path: Path) -> None:
    """A job asked for right after the agent connected must not wait a poll interval."""
    server = FakeServer()
    agent = runner(server, tmp_path)
    assert agent.cycle() == 0.0  # the first poll: wait_seconds 0, answered at once
    assert agent.cycle() == 1.0  # a long poll answered at once: a server not to spin on
    assert [poll.wait_seconds for poll in server.polls] == [0.0, agent.poll_wait]

"""Dispatch: a queued job goes to exactly one poll, on SQLite and on PostgreSQL; polls are
heartbeats that abort the jobs an agent lost; the long-poll wakes when a job is queued."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.helpers.server import Harness, make_settings, running_server

from roost.server.app import prepare_state
from roost.server.catalog.queries import jobs as job_queries
from roost.server.dispatch import AGENT_LOST, AGENT_RESTARTED, claim_jobs
from roost.server.state import ServerState


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    db_url = None
    if request.param == "postgres":
        new_database: Callable[[], str] = request.getfixturevalue("postgres_server")
        db_url = new_database()
    with running_server(make_settings(tmp_path / "home", db_url=db_url)) as harness:
        yield harness


def _queue_backups(server: Harness, count: int) -> set[str]:
    ids = set()
    for index in range(count):
        server.backup_set(f"set{index}", "fs1", [f"/srv/share{index}"])
        reply = server.client.post(f"/api/v1/sets/set{index}/backup", headers=server.admin)
        ids.add(reply.json()["id"])
    return ids


def _any_queued(state: ServerState, agent_id: str) -> bool:
    with state.db.read_session() as session:
        return job_queries.has_queued(session, agent_id)


def test_each_job_is_claimed_exactly_once_by_racing_replicas(any_db_server: Harness) -> None:
    server = any_db_server
    server.enroll("fs1")
    queued = _queue_backups(server, 12)
    agent_id = server.agents["fs1"][0]
    # A second replica: its own engine and state on the same catalog and storage.
    replica = prepare_state(server.state.settings, server.clock)
    states: list[ServerState] = [server.state, replica]
    start = threading.Barrier(8)

    def race(worker: int) -> list[str]:
        state = states[worker % 2]
        start.wait()
        claimed: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = [a.id for a in claim_jobs(state, agent_id, "boot-1")]
            claimed += got
            if not got and not _any_queued(state, agent_id):
                break
        return claimed

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(race, range(8)))
    replica.db.dispose()
    every_claim = [job_id for claimed in results for job_id in claimed]
    assert sorted(every_claim) == sorted(queued)  # all of them, none twice
    states_now = {server.job(job_id)["state"] for job_id in queued}
    assert states_now == {"dispatched"}


def test_parallel_polls_of_one_agent_get_the_job_once(any_db_server: Harness) -> None:
    server = any_db_server
    server.enroll("fs1")
    (job_id,) = _queue_backups(server, 1)
    with ThreadPoolExecutor(max_workers=2) as pool:
        polls = [pool.submit(server.poll, "fs1", wait_seconds=0.5) for _ in range(2)]
        got = [job["id"] for poll in polls for job in poll.result()]
    assert got == [job_id]
    assert server.job(job_id)["state"] == "dispatched"  # the other poll did not abort it


def test_another_agent_never_gets_the_job(server: Harness) -> None:
    server.enroll("fs1")
    server.enroll("fs2")
    (job_id,) = _queue_backups(server, 1)
    assert server.poll("fs2") == []
    assert [job["id"] for job in server.poll("fs1")] == [job_id]


def test_assignment_describes_the_backup(server: Harness) -> None:
    server.enroll("fs1")
    server.policy("slow", bandwidth_limit=1_000_000)
    server.backup_set("docs", "fs1", ["/srv/docs"], policy="slow", excludes=["*.tmp"])
    job = server.client.post("/api/v1/sets/docs/backup", headers=server.admin).json()
    (assignment,) = server.poll("fs1")
    set_id = server.client.get("/api/v1/sets/docs", headers=server.admin).json()["id"]
    assert assignment == {
        "id": job["id"],
        "kind": "backup",
        "set_id": set_id,
        "set_name": "docs",
        "paths": ["/srv/docs"],
        "excludes": ["*.tmp"],
        "snapshot_mode": "auto",
        "level": "full",
        "parent_snapshot": None,
        "force_read": [],
        "bandwidth_limit": 1_000_000,
        "tags": [f"roost-set={set_id}", f"roost-job={job['id']}"],
        "restore": None,
    }
    detail = server.job(job["id"])
    assert (detail["level"], detail["level_reason"]) == ("full", "first backup of this backup set")


def test_a_second_backup_of_a_busy_set_waits(server: Harness) -> None:
    server.enroll("fs1")
    (first,) = _queue_backups(server, 1)
    assert [j["id"] for j in server.poll("fs1")] == [first]
    server.event("fs1", first, state="running")
    second = server.client.post("/api/v1/sets/set0/backup", headers=server.admin).json()["id"]
    assert server.poll("fs1", running_jobs=[first]) == []
    server.event("fs1", first, state="succeeded")
    assert [j["id"] for j in server.poll("fs1")] == [second]


def test_a_new_boot_id_aborts_the_jobs_of_the_old_boot(server: Harness) -> None:
    server.enroll("fs1")
    (job_id,) = _queue_backups(server, 1)
    server.poll("fs1")
    server.event("fs1", job_id, state="running")
    server.poll("fs1", boot_id="boot-2", running_jobs=[])
    job = server.job(job_id)
    assert (job["state"], job["reason"]) == ("aborted", AGENT_RESTARTED)


def test_a_job_missing_from_running_jobs_is_aborted_after_the_grace(server: Harness) -> None:
    server.enroll("fs1")
    (job_id,) = _queue_backups(server, 1)
    server.poll("fs1")
    server.poll("fs1", running_jobs=[])  # sent before the agent saw the job: not lost yet
    assert server.job(job_id)["state"] == "dispatched"
    server.clock.advance(seconds=11)
    server.poll("fs1", running_jobs=[job_id])
    assert server.job(job_id)["state"] == "dispatched"
    server.poll("fs1", running_jobs=[])
    job = server.job(job_id)
    assert (job["state"], job["reason"]) == ("aborted", AGENT_LOST)
    reply = server.event("fs1", job_id, state="running")
    assert reply == {"cancel": True, "cancel_reason": AGENT_LOST}


def test_disabled_agent_gets_no_jobs_but_stays_seen(server: Harness) -> None:
    server.enroll("fs1")
    (job_id,) = _queue_backups(server, 1)
    server.client.post("/api/v1/agents/fs1/disable", headers=server.admin)
    server.clock.advance(seconds=30)
    assert server.poll("fs1") == []
    agents = server.client.get("/api/v1/agents", headers=server.admin).json()
    assert (agents[0]["state"], agents[0]["last_seen"]) == ("disabled", "2026-03-02T12:00:30Z")
    assert server.job(job_id)["state"] == "queued"


def test_long_poll_wakes_when_a_job_is_queued(server: Harness) -> None:
    server.enroll("fs1")
    server.backup_set("docs", "fs1", ["/srv/docs"])
    server.state.settings.poll_recheck_seconds = 30  # only the wake-up can deliver in time
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        waiting = pool.submit(server.poll, "fs1", wait_seconds=2)
        time.sleep(0.3)
        job = server.client.post("/api/v1/sets/docs/backup", headers=server.admin).json()
        assert [j["id"] for j in waiting.result()] == [job["id"]]
    assert time.monotonic() - started < 1.5


def test_long_poll_returns_empty_after_its_wait(server: Harness) -> None:
    server.enroll("fs1")
    started = time.monotonic()
    assert server.poll("fs1", wait_seconds=0.3) == []
    assert 0.25 < time.monotonic() - started < 1.5

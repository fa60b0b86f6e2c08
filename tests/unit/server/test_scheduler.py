"""scheduler_tick driven by an injected clock: slots, offline agents, replicas, retries,
windows and nightly maintenance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.server import Harness, make_settings, running_server

from roost.server.app import prepare_state
from roost.server.scheduler.loop import TickReport, scheduler_tick
from roost.server.scheduler.planning import WINDOW_CLOSED
from roost.server.scheduler.policy import AGENT_OFFLINE, MISSED_SERVER_DOWN
from roost.server.state import ServerState

TUESDAY_0200 = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)


def tick(state: ServerState, now: datetime) -> TickReport:
    async def run() -> TickReport:
        report = await scheduler_tick(state, now)
        await asyncio.gather(*report.maintenance)
        return report

    return asyncio.run(run())


def jobs(server: Harness, **query: str) -> list[dict[str, Any]]:
    reply = server.client.get("/api/v1/jobs", params=query, headers=server.admin)
    result: list[dict[str, Any]] = reply.json()
    return result


@pytest.fixture
def nightly(server: Harness) -> Harness:
    server.enroll("fs1")
    server.policy("nightly", schedule="daily 02:00", retries=2, retry_interval=600)
    server.backup_set("docs", "fs1", ["/srv/docs"], policy="nightly")
    return server


def test_offline_agent_at_schedule_time_skips_the_job(nightly: Harness) -> None:
    nightly.clock.now = TUESDAY_0200.replace(second=5)
    tick(nightly.state, nightly.clock.now)
    (job,) = jobs(nightly)
    assert (job["state"], job["reason"], job["trigger"]) == ("skipped", AGENT_OFFLINE, "schedule")
    assert job["scheduled_for"] == "2026-03-03T02:00:00Z"
    assert nightly.poll("fs1") == []


def test_online_agent_gets_the_scheduled_job(nightly: Harness) -> None:
    nightly.clock.now = TUESDAY_0200
    nightly.poll("fs1")  # heartbeat: online
    nightly.clock.advance(seconds=5)
    report = tick(nightly.state, nightly.clock.now)
    (job,) = jobs(nightly)
    assert (job["state"], job["reason"], job["attempt"]) == ("queued", None, 1)
    assert report.plan.queued == [job["id"]]
    assert [a["id"] for a in nightly.poll("fs1")] == [job["id"]]


def test_ticks_before_the_slot_create_nothing(nightly: Harness) -> None:
    for hour in (13, 20, 23):
        tick(nightly.state, datetime(2026, 3, 2, hour, tzinfo=UTC))
    assert jobs(nightly) == []


def test_repeated_ticks_create_one_job_per_slot(nightly: Harness) -> None:
    nightly.clock.now = TUESDAY_0200.replace(second=5)
    for _ in range(3):
        tick(nightly.state, nightly.clock.now)
        nightly.clock.advance(seconds=10)
    assert len(jobs(nightly)) == 1


@pytest.fixture(params=["sqlite", "postgres"])
def two_replicas(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Harness, ServerState]]:
    db_url = None
    if request.param == "postgres":
        new_database: Callable[[], str] = request.getfixturevalue("postgres_server")
        db_url = new_database()
    with running_server(make_settings(tmp_path / "home", db_url=db_url)) as harness:
        replica = prepare_state(harness.state.settings, harness.clock)
        yield harness, replica
        replica.db.dispose()


def test_two_replicas_create_one_job_per_slot(two_replicas: tuple[Harness, ServerState]) -> None:
    server, replica = two_replicas
    server.enroll("fs1")
    server.policy("hourly", schedule="0 * * * *")
    for index in range(4):
        server.backup_set(f"s{index}", "fs1", [f"/srv/{index}"], policy="hourly")
    server.clock.now = datetime(2026, 3, 2, 15, 0, 1, tzinfo=UTC)
    server.poll("fs1")

    async def both(now: datetime) -> None:
        await asyncio.gather(scheduler_tick(server.state, now), scheduler_tick(replica, now))

    for minute in (0, 1):  # the 15:00 slot, and again a minute later
        asyncio.run(both(server.clock.now.replace(minute=minute)))
    all_jobs = jobs(server, limit="100")
    # The sets exist since 12:00 and the first tick is at 15:00: 13:00 and 14:00 were missed.
    slots = sorted((j["set"], j["scheduled_for"], j["state"]) for j in all_jobs)
    expected = sorted(
        (f"s{i}", f"2026-03-02T{hour}:00:00Z", state)
        for i in range(4)
        for hour, state in (("13", "skipped"), ("14", "skipped"), ("15", "queued"))
    )
    assert slots == expected


def test_missed_slots_are_skipped_and_the_latest_runs(nightly: Harness) -> None:
    friday = datetime(2026, 3, 6, 2, 30, tzinfo=UTC)
    nightly.clock.now = friday
    nightly.poll("fs1")
    tick(nightly.state, friday)
    found = sorted((j["scheduled_for"], j["state"], j["reason"]) for j in jobs(nightly))
    assert found == [
        ("2026-03-03T02:00:00Z", "skipped", MISSED_SERVER_DOWN),
        ("2026-03-04T02:00:00Z", "skipped", MISSED_SERVER_DOWN),
        ("2026-03-05T02:00:00Z", "skipped", MISSED_SERVER_DOWN),
        ("2026-03-06T02:00:00Z", "queued", None),
    ]


def test_failed_scheduled_job_is_retried_after_the_interval(nightly: Harness) -> None:
    nightly.clock.now = TUESDAY_0200
    nightly.poll("fs1")
    tick(nightly.state, nightly.clock.advance(seconds=5))
    (assignment,) = nightly.poll("fs1")
    nightly.clock.advance(minutes=5)
    nightly.event("fs1", assignment["id"], state="failed", error="network unreachable")
    tick(nightly.state, nightly.clock.advance(minutes=9))
    assert len(jobs(nightly)) == 1  # 9 of 10 minutes: not yet
    nightly.clock.advance(minutes=2)
    nightly.poll("fs1")
    tick(nightly.state, nightly.clock.now)
    retry = jobs(nightly)[0]
    assert (retry["trigger"], retry["attempt"], retry["state"]) == ("retry", 2, "queued")
    assert retry["scheduled_for"] == "2026-03-03T02:00:00Z"
    tick(nightly.state, nightly.clock.advance(minutes=1))
    assert len(jobs(nightly)) == 2


def test_a_running_job_is_stopped_when_its_window_closes(server: Harness) -> None:
    server.enroll("fs1")
    server.policy("windowed", schedule="daily 02:00", window="01:00-05:00")
    server.backup_set("docs", "fs1", ["/srv/docs"], policy="windowed")
    server.clock.now = TUESDAY_0200
    server.poll("fs1")
    tick(server.state, server.clock.advance(seconds=5))
    (assignment,) = server.poll("fs1")
    server.event("fs1", assignment["id"], state="running")
    tick(server.state, datetime(2026, 3, 3, 4, 59, tzinfo=UTC))
    assert server.event("fs1", assignment["id"], progress={"files_done": 1, "bytes_done": 1}) == {
        "cancel": False,
        "cancel_reason": None,
    }
    report = tick(server.state, datetime(2026, 3, 3, 5, 0, 1, tzinfo=UTC))
    assert report.plan.stopped == [assignment["id"]]
    reply = server.event("fs1", assignment["id"], progress={"files_done": 2, "bytes_done": 2})
    assert reply == {"cancel": True, "cancel_reason": WINDOW_CLOSED}
    server.event("fs1", assignment["id"], state="cancelled")
    job = server.job(assignment["id"])
    assert (job["state"], job["reason"]) == ("cancelled", WINDOW_CLOSED)


def test_disabled_sets_are_not_scheduled(nightly: Harness) -> None:
    nightly.client.post("/api/v1/sets/docs/disable", headers=nightly.admin)
    tick(nightly.state, TUESDAY_0200.replace(second=5))
    nightly.client.post("/api/v1/sets/docs/enable", headers=nightly.admin)
    tick(nightly.state, TUESDAY_0200.replace(minute=1))
    assert jobs(nightly) == []


def test_nightly_maintenance_runs_once_a_day_on_one_replica(nightly: Harness) -> None:
    replica = prepare_state(nightly.state.settings, nightly.clock)
    try:
        at_three = datetime(2026, 3, 3, 3, 0, 5, tzinfo=UTC)

        async def both() -> list[TickReport]:
            reports = await asyncio.gather(
                scheduler_tick(nightly.state, at_three), scheduler_tick(replica, at_three)
            )
            for report in reports:
                await asyncio.gather(*report.maintenance)
            return list(reports)

        reports = asyncio.run(both())
        ran = [task.result() for report in reports for task in report.maintenance]
        assert len(ran) == 1
        assert ran[0].errors == [] and ran[0].prune is not None
        assert tick(nightly.state, at_three.replace(hour=15)).maintenance == []
        assert len(tick(nightly.state, at_three.replace(day=4)).maintenance) == 1
    finally:
        replica.db.dispose()

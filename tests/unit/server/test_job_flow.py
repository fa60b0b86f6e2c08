"""The job state machine and the events agents report: progress, log, missed files, results."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from threading import Thread
from typing import Any

import pytest
from tests.helpers.server import Harness

from roost.server.catalog.models import Job
from roost.server.errors import IllegalTransition
from roost.server.jobs import transition

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _job(state: str) -> Job:
    return Job(id="j1", state=state, kind="backup", progress_bytes=0)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("queued", "dispatched"),
        ("queued", "skipped"),
        ("queued", "cancelled"),
        ("dispatched", "running"),
        ("dispatched", "cancelled"),
        ("running", "succeeded"),
        ("running", "succeeded_with_errors"),
        ("running", "failed"),
        ("running", "aborted"),
        ("running", "cancelled"),
    ],
)
def test_legal_transitions(start: str, end: str) -> None:
    job = _job(start)
    assert transition(job, end, now=NOW) is True
    assert job.state == end


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("queued", "running"),
        ("queued", "succeeded"),
        ("running", "queued"),
        ("running", "dispatched"),
        ("running", "skipped"),
        ("succeeded", "running"),
        ("failed", "succeeded"),
        ("skipped", "queued"),
        ("aborted", "running"),
    ],
)
def test_illegal_transitions_are_refused(start: str, end: str) -> None:
    job = _job(start)
    with pytest.raises(IllegalTransition):
        transition(job, end, now=NOW)
    assert job.state == start


def test_leaving_a_final_state_says_what_to_do() -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition(_job("succeeded"), "failed", now=NOW)
    assert str(caught.value) == (
        "job j1 already ended as succeeded and cannot become failed; start a new backup instead"
    )


def test_repeating_the_current_state_changes_nothing() -> None:
    job = _job("running")
    assert transition(job, "running", now=NOW) is False


@pytest.fixture
def running_job(server: Harness) -> tuple[Harness, str]:
    server.enroll("fs1")
    server.backup_set("docs", "fs1", ["/srv/docs"])
    job_id = server.client.post("/api/v1/sets/docs/backup", headers=server.admin).json()["id"]
    assert server.job(job_id)["state"] == "queued"
    server.poll("fs1")
    assert server.job(job_id)["state"] == "dispatched"
    server.clock.advance(seconds=5)
    server.event(
        "fs1", job_id, state="running", estimate={"files": 10, "bytes": 1000, "seconds": 20}
    )
    return server, job_id


def test_a_backup_runs_from_queued_to_succeeded(running_job: tuple[Harness, str]) -> None:
    server, job_id = running_job
    assert server.job(job_id)["state"] == "running"
    server.clock.advance(seconds=10)
    server.event(
        "fs1",
        job_id,
        progress={"files_done": 4, "bytes_done": 400, "rate": 40.0, "eta_seconds": 15},
        log=[{"at": "2026-03-02T12:00:10+00:00", "level": "info", "message": "scanning done"}],
    )
    live = server.job(job_id)
    assert live["progress"] == {"files": 4, "bytes": 400, "rate": 40.0, "eta_seconds": 15.0}
    server.clock.advance(seconds=30)
    server.event(
        "fs1",
        job_id,
        state="succeeded",
        progress={"files_done": 10, "bytes_done": 1500},
        result={"snapshot_id": "ab" * 32, "summary": {"files_new": 10}},
    )
    done = server.job(job_id)
    assert done["state"] == "succeeded"
    assert (done["snapshot_id"], done["summary"]) == ("ab" * 32, {"files_new": 10})
    assert done["started_at"] == "2026-03-02T12:00:05Z"
    assert done["finished_at"] == "2026-03-02T12:00:45Z"
    assert done["estimate_accuracy"] == {"duration": 2.0, "bytes": 1.5}
    messages = [line["message"] for line in done["log"]]
    assert messages == ["full backup: first backup of this backup set", "scanning done"]


def test_illegal_event_transitions_are_409(running_job: tuple[Harness, str]) -> None:
    server, job_id = running_job
    server.event("fs1", job_id, state="failed", error="disk full on /srv")
    job = server.job(job_id)
    assert (job["state"], job["reason"]) == ("failed", "disk full on /srv")
    reply = server.client.post(
        f"/api/v1/agent/jobs/{job_id}/events",
        json={"state": "succeeded"},
        headers=server.agent_headers("fs1"),
    )
    assert reply.status_code == 200  # the agent is told to stop, the job stays failed
    assert reply.json()["cancel"] is True
    assert server.job(job_id)["state"] == "failed"


def test_an_agent_cannot_report_on_another_agents_job(running_job: tuple[Harness, str]) -> None:
    server, job_id = running_job
    server.enroll("fs2")
    reply = server.client.post(
        f"/api/v1/agent/jobs/{job_id}/events",
        json={"state": "succeeded"},
        headers=server.agent_headers("fs2"),
    )
    assert reply.status_code == 404


def test_cancel_of_a_running_job_reaches_the_agent(running_job: tuple[Harness, str]) -> None:
    server, job_id = running_job
    job = server.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=server.admin).json()
    assert (job["state"], job["cancel_requested"]) == ("running", True)
    reply = server.event("fs1", job_id, progress={"files_done": 1, "bytes_done": 1})
    assert reply == {"cancel": True, "cancel_reason": "cancelled by admin"}
    server.event("fs1", job_id, state="cancelled")
    job = server.job(job_id)
    assert (job["state"], job["reason"]) == ("cancelled", "cancelled by admin")
    again = server.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=server.admin)
    assert again.status_code == 409


def test_cancel_of_a_queued_job_is_immediate(server: Harness) -> None:
    server.enroll("fs1")
    server.backup_set("docs", "fs1", ["/srv/docs"])
    job_id = server.client.post("/api/v1/sets/docs/backup", headers=server.admin).json()["id"]
    job = server.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=server.admin).json()
    assert (job["state"], job["reason"]) == ("cancelled", "cancelled by admin")
    assert server.poll("fs1") == []


def test_missed_files_are_stored_and_read_again_next_time(
    running_job: tuple[Harness, str],
) -> None:
    server, job_id = running_job
    missed = [
        {"path": "/srv/docs/locked.xlsx", "reason": "locked by another process"},
        {"path": "/srv/docs/secret", "reason": "permission denied"},
    ]
    server.event("fs1", job_id, missed=missed)
    server.event("fs1", job_id, state="succeeded_with_errors", result={"snapshot_id": "cd" * 32})
    reply = server.client.get(f"/api/v1/jobs/{job_id}/missed", headers=server.admin)
    assert reply.json() == missed
    server.client.post("/api/v1/sets/docs/backup", headers=server.admin)
    (assignment,) = server.poll("fs1", running_jobs=[])
    assert assignment["force_read"] == ["/srv/docs/locked.xlsx", "/srv/docs/secret"]


def test_jobs_filter_by_state_set_and_agent(running_job: tuple[Harness, str]) -> None:
    server, job_id = running_job
    by_state = server.client.get("/api/v1/jobs?state=running", headers=server.admin).json()
    assert [j["id"] for j in by_state] == [job_id]
    assert server.client.get("/api/v1/jobs?state=queued", headers=server.admin).json() == []
    by_set = server.client.get("/api/v1/jobs?set=docs&agent=fs1", headers=server.admin).json()
    assert [(j["set"], j["agent"]) for j in by_set] == [("docs", "fs1")]
    assert server.client.get("/api/v1/jobs?set=nope", headers=server.admin).status_code == 404


def _wait_in_background(server: Harness, job_id: str, wait: float) -> tuple[Thread, list[Any]]:
    """GET /jobs/{id}?wait= on a thread; its answer: (state, seconds it took)."""
    headers = server.admin  # logged in before the thread starts
    answers: list[Any] = []

    def ask() -> None:
        started = time.monotonic()
        reply = server.client.get(f"/api/v1/jobs/{job_id}", params={"wait": wait}, headers=headers)
        answers.append((reply.json()["state"], time.monotonic() - started))

    waiter = Thread(target=ask)
    waiter.start()
    return waiter, answers


def test_a_waiting_get_answers_as_soon_as_the_job_ends(running_job: tuple[Harness, str]) -> None:
    server, job_id = running_job
    server.state.settings.poll_recheck_seconds = 60.0  # only the wake-up can answer early
    waiter, answers = _wait_in_background(server, job_id, wait=30)
    time.sleep(0.5)
    assert answers == []  # still running: the request waits
    server.event("fs1", job_id, state="succeeded", result={"snapshot_id": "ab" * 32})
    waiter.join(20)
    [(state, seconds)] = answers
    assert state == "succeeded" and seconds < 20  # woken by the end, not by the 30 s


def test_a_waiting_get_answers_when_a_queued_job_is_cancelled(server: Harness) -> None:
    server.state.settings.poll_recheck_seconds = 60.0
    server.enroll("fs1")
    server.backup_set("docs", "fs1", ["/srv/docs"])
    job_id = server.client.post("/api/v1/sets/docs/backup", headers=server.admin).json()["id"]
    waiter, answers = _wait_in_background(server, job_id, wait=30)
    time.sleep(0.5)
    server.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=server.admin)
    waiter.join(20)
    [(state, seconds)] = answers
    assert state == "cancelled" and seconds < 20


def test_a_waiting_get_sees_a_state_change_and_otherwise_answers_after_the_wait(
    running_job: tuple[Harness, str],
) -> None:
    server, job_id = running_job
    headers = server.admin
    started = time.monotonic()
    reply = server.client.get(f"/api/v1/jobs/{job_id}?wait=0.3", headers=headers)
    assert reply.json()["state"] == "running"  # no change within 0.3 s
    assert time.monotonic() - started >= 0.3
    too_long = server.client.get(f"/api/v1/jobs/{job_id}?wait=61", headers=headers)
    assert too_long.status_code == 422
    server.backup_set("more", "fs1", ["/srv/more"])
    queued = server.client.post("/api/v1/sets/more/backup", headers=server.admin).json()["id"]
    waiter, answers = _wait_in_background(server, queued, wait=30)
    time.sleep(0.3)
    server.poll("fs1")  # dispatched by this poll: seen at the next re-check (0.05 s here)
    waiter.join(20)
    [(state, seconds)] = answers
    assert state == "dispatched" and seconds < 20

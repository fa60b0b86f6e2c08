"""DESIGN.md §1 steps 1-3 and "reboot during backup", with a real server and real agents:
backup now while the agent is offline (queued, then run), a scheduled backup while it is
offline (skipped, "agent offline"), full then incremental, a disabled agent, and an agent
killed in the middle of a backup (aborted; the next backup reuses the uploaded chunks).

The scheduled test needs a minute boundary to pass. Its set is armed by a module fixture
when the module starts, so the boundary passes while the other tests run; the test itself
runs last and usually waits only a few seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.helpers.api_client import AdminClient, ApiError
from tests.helpers.compare import assert_trees_equal
from tests.helpers.processes import ServerProcess, start_server
from tests.integration.workflow.support import (
    Fleet,
    deadline,
    describe_job,
    restored,
    write_files,
)

MIB = 2**20
QUEUED_OFFLINE = "agent offline; queued until it connects"


def _small_tree(root: Path) -> Path:
    return write_files(
        root,
        {
            "report.txt": b"quarterly numbers\n",
            "deep/er/blob.bin": os.urandom(300_000),
            "empty": b"",
        },
    )


# -- armed at module start: a scheduled set whose agent is offline ----------------------------


@dataclass
class ArmedSchedule:
    set_name: str
    created_at: datetime  # slots after it are planned


@pytest.fixture(scope="module")
def module_fleet(
    server: ServerProcess, admin: AdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    crew = Fleet(
        server, admin, tmp_path_factory.mktemp("module-fleet"), f"sched-{os.urandom(2).hex()}"
    )
    try:
        yield crew
    finally:
        crew.stop_all()


@pytest.fixture(scope="module", autouse=True)
def armed_schedule(module_fleet: Fleet, admin: AdminClient) -> ArmedSchedule:
    """An agent enrolled but never run (offline), with a set on an every-minute schedule."""
    name = module_fleet.name("agent")
    module_fleet.enroll(name)
    assert module_fleet.wait_agent_state(name, "offline")["last_seen"] is None
    source = _small_tree(module_fleet.workdir / "src")
    policy = module_fleet.name("every-minute")
    admin.create_policy(policy, "* * * * *")
    set_name = module_fleet.name("set")
    created = admin.create_set(set_name, name, [str(source)], policy=policy)
    return ArmedSchedule(set_name, datetime.fromisoformat(created["created_at"]))


# -- backup now -------------------------------------------------------------------------------


def test_backup_now_while_agent_offline_is_queued_then_runs(fleet: Fleet, tmp_path: Path) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    home = tmp_path / "agent-home"
    agent = fleet.start_agent(name, home=home)
    fleet.stop(agent, wait_offline=True)
    source = _small_tree(tmp_path / "src")
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)])

    job = admin.backup_now(set_name)
    assert (job["state"], job["trigger"], job["reason"]) == ("queued", "now", QUEUED_OFFLINE)
    # Nobody claims it while the agent is away: it stays exactly queued.
    over = deadline(2.0)
    while not over():
        seen = admin.job(job["id"])
        fleet.check(
            seen["state"] == "queued" and seen["dispatched_at"] is None, "offline job", seen
        )
        time.sleep(0.2)

    fleet.start_agent(name, home=home)  # the same enrollment, a new process
    done = fleet.wait_job(job["id"])
    fleet.check(done["state"] == "succeeded", "the queued job once the agent is back", done)
    assert done["level"] == "full"
    assert done["snapshot_id"]
    assert done["dispatched_at"] is not None and done["started_at"] is not None

    target = tmp_path / "restore"
    fleet.restore(set_name, target, snapshot=done["snapshot_id"])
    assert_trees_equal(source, restored(target, source), check_atime=False)


def test_first_backup_full_then_incremental(fleet: Fleet, tmp_path: Path) -> None:
    name = fleet.name("agent")
    fleet.start_agent(name)
    source = _small_tree(tmp_path / "src")
    set_name = fleet.name("set")
    fleet.admin.create_set(set_name, name, [str(source)])

    first = fleet.run_backup(set_name)
    assert (first["level"], first["level_reason"]) == ("full", "first backup of this backup set")
    assert first["summary"]["files_new"] == 3
    assert first["summary"]["bytes_read"] == 300_000 + len(b"quarterly numbers\n")

    second = fleet.run_backup(set_name)
    assert second["level"] == "incremental", describe_job(second)
    # decide_level: "previous snapshot <first 8 hex digits of its id>"
    assert second["level_reason"] == f"previous snapshot {first['snapshot_id'][:8]}"
    assert f"incremental backup: previous snapshot {first['snapshot_id'][:8]}" in [
        line["message"] for line in second["log"]
    ]
    summary = second["summary"]
    assert (summary["files_new"], summary["files_changed"], summary["files_unchanged"]) == (
        0,
        0,
        3,
    ), describe_job(second)
    assert summary["bytes_read"] == 0, describe_job(second)
    assert summary["bytes_stored"] < 4096, "an unchanged tree stores only trees/metadata"
    assert second["snapshot_id"] != first["snapshot_id"]


# -- a disabled agent -------------------------------------------------------------------------


def test_disabled_agent_backup_now(fleet: Fleet, tmp_path: Path) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    fleet.start_agent(name)
    source = _small_tree(tmp_path / "src")
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)])

    assert admin.disable_agent(name)["state"] == "disabled"
    with pytest.raises(ApiError) as refused:
        admin.backup_now(set_name)
    assert refused.value.status == 409
    assert refused.value.detail == f"cannot back up {set_name}: agent disabled; enable it first"
    assert admin.jobs(set=set_name) == []  # the refusal left no job behind
    assert fleet.wait_agent_state(name, "disabled")["state"] == "disabled"  # polls don't undo it

    assert admin.enable_agent(name)["state"] == "online"
    job = fleet.run_backup(set_name)
    assert job["trigger"] == "now"


def test_job_queued_before_the_agent_was_disabled_waits_until_it_is_enabled(
    fleet: Fleet, tmp_path: Path
) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    home = tmp_path / "agent-home"
    fleet.stop(fleet.start_agent(name, home=home), wait_offline=True)
    source = _small_tree(tmp_path / "src")
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)])
    job = admin.backup_now(set_name)
    admin.disable_agent(name)

    before = admin.agent(name)["last_seen"]
    fleet.start_agent(name, home=home, wait_online=False)
    for poll in ("a", "another"):  # a poll records its heartbeat before it claims jobs
        seen: str = admin.agent(name)["last_seen"]
        fleet.observe(f"{poll} poll", lambda: admin.agent(name)["last_seen"] != seen)  # noqa: B023
    assert admin.agent(name)["last_seen"] != before
    assert admin.agent(name)["state"] == "disabled"
    assert admin.job(job["id"])["state"] == "queued"  # a disabled agent is given nothing

    admin.enable_agent(name)
    done = fleet.wait_job(job["id"])
    fleet.check(done["state"] == "succeeded", "the queued job after enabling", done)


def test_backup_now_right_after_the_agent_stopped_stays_queued(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Regression: the long-poll an agent had open when it stopped went on waiting on the
    server and claimed a job queued meanwhile for a process that was gone; the job sat
    `dispatched` and was aborted "agent lost the job" once the agent came back. Seen with
    the default 25 s long-poll, so this test runs its own server with it."""
    server = start_server(tmp_path / "server", {"ROOST_POLL_WAIT_SECONDS": "25"})
    try:
        admin = AdminClient.login(server.url, server.admin_password, fingerprint=server.fingerprint)
        crew = Fleet(server, admin, tmp_path / "fleet", fleet.prefix)
        try:
            name = crew.name("agent")
            home = tmp_path / "agent-home"
            agent = crew.start_agent(name, home=home)
            source = _small_tree(tmp_path / "src")
            set_name = crew.name("set")
            admin.create_set(set_name, name, [str(source)])
            first_poll = admin.agent(name)["last_seen"]
            # The next heartbeat opens the long poll that then waits up to 25 s.
            crew.observe("the long poll", lambda: admin.agent(name)["last_seen"] != first_poll)
            crew.stop(agent)  # still "online" for 90 s (the default)

            job = admin.backup_now(set_name)
            assert (job["state"], job["reason"]) == ("queued", None)  # the agent looks online
            over = deadline(2.0)
            while not over():
                seen = admin.job(job["id"])
                crew.check(seen["state"] == "queued", "a job no running agent could take", seen)
                time.sleep(0.2)

            crew.start_agent(name, home=home)
            done = crew.wait_job(job["id"])
            crew.check(done["state"] == "succeeded", "the job once the agent is back", done)
        finally:
            crew.stop_all()
            admin.close()
    finally:
        server.stop()


# -- reboot during backup ---------------------------------------------------------------------


def _packs(server_home: Path) -> set[Path]:
    """Pack objects in the server's local storage (temporary files are never listed)."""
    return {
        p
        for p in server_home.glob("storage/orgs/*/data/*/*")
        if p.is_file() and not p.name.startswith(".tmp-")
    }


@pytest.mark.slow
def test_agent_killed_mid_backup_is_aborted_and_next_backup_reuses_chunks(
    fleet: Fleet, tmp_path: Path, server_home: Path
) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    home = tmp_path / "agent-home"
    agent = fleet.start_agent(name, home=home)
    size = 60 * MIB
    source = write_files(tmp_path / "src", {"big-1.bin": os.urandom(size // 2)})
    write_files(source, {"big-2.bin": os.urandom(size // 2)})
    policy = fleet.name("throttled")
    admin.create_policy(policy, bandwidth_limit=8 * MIB)  # ~8 s for the whole source
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)], policy=policy)
    packs_before = _packs(server_home)

    job = admin.backup_now(set_name)
    fleet.wait_job(job["id"], "running")
    # Some chunks are uploaded (a whole pack is in storage) but far from all of them.
    fleet.observe("a first pack in storage", lambda: _packs(server_home) - packs_before)
    fleet.observe("progress", lambda: admin.job(job["id"])["progress"]["bytes"] > 0)
    fleet.stop(agent, how="kill")  # and restart at once, like a quick reboot
    uploaded = _packs(server_home) - packs_before
    in_flight = admin.job(job["id"])
    fleet.check(in_flight["state"] == "running", "the job when the agent was killed", in_flight)

    # A new process, the same machine (same boot id): its polls no longer list the job.
    fleet.start_agent(name, home=home)
    aborted = fleet.wait_job(job["id"], timeout=30)
    fleet.check(aborted["state"] == "aborted", "the killed agent's job", aborted)
    assert aborted["reason"] == "agent lost the job"
    assert aborted["snapshot_id"] is None
    assert any(
        line["level"] == "error" and line["message"] == "agent lost the job"
        for line in aborted["log"]
    ), describe_job(aborted)

    again = fleet.run_backup(set_name)
    # No snapshot was written, so this is still the set's first backup...
    assert (again["level"], again["level_reason"]) == ("full", "first backup of this backup set")
    summary = again["summary"]
    assert summary["bytes_read"] == size  # ...every file is read again...
    # ...but the chunks in the killed job's packs are not uploaded twice.
    reused = sum(p.stat().st_size for p in uploaded)
    assert reused >= 8 * MIB, f"the killed job left only {reused} bytes of packs"
    assert summary["bytes_stored"] <= size - reused + MIB, (describe_job(again), reused)
    assert summary["bytes_stored"] < size

    target = tmp_path / "restore"
    fleet.restore(set_name, target)
    assert_trees_equal(source, restored(target, source), check_atime=False)


# -- scheduled backup, agent offline (armed at module start; keep this test last) -------------


@pytest.mark.slow
def test_scheduled_backup_with_agent_offline_is_skipped(
    fleet: Fleet, armed_schedule: ArmedSchedule
) -> None:
    admin = fleet.admin
    first_slot = armed_schedule.created_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    wait = (first_slot - datetime.now(UTC)).total_seconds() + 15  # + scheduler ticks
    scheduled = fleet.observe(
        f"a scheduled job of {armed_schedule.set_name} (slot {first_slot:%H:%M})",
        lambda: [j for j in admin.jobs(set=armed_schedule.set_name) if j["trigger"] == "schedule"],
        timeout=max(wait, 1.0),
    )
    job = scheduled[-1]  # the oldest listed: jobs are newest first
    assert job["state"] == "skipped", describe_job(job)
    assert job["reason"] == "agent offline"
    assert job["kind"] == "backup"
    assert datetime.fromisoformat(job["scheduled_for"]) == first_slot
    assert job["dispatched_at"] is None and job["started_at"] is None
    assert job["finished_at"] is not None
    detail = admin.job(job["id"])
    assert [(line["level"], line["message"]) for line in detail["log"]] == [
        ("warning", "skipped: agent offline")
    ]
    # The skip is visible on the set and in the filtered job list.
    assert admin.backup_set(armed_schedule.set_name)["last_job"]["state"] == "skipped"
    assert job["id"] in {j["id"] for j in admin.jobs(state="skipped")}
    # And nothing of this set ever ran.
    assert {j["state"] for j in admin.jobs(set=armed_schedule.set_name)} == {"skipped"}

"""DESIGN.md §1 step 5 and the admin's controls over a long job: the estimate is reported before
any progress, progress grows while the job runs, the finished job records how good the
estimate was; and a running job can be cancelled. A policy bandwidth limit makes the jobs
last several seconds; nothing here asserts a duration."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.api_client import FINAL_STATES, ApiError
from tests.integration.workflow.support import Fleet, describe_job, write_files

MIB = 2**20


def _watch(fleet: Fleet, job_id: str, timeout: float = 90.0) -> list[dict[str, Any]]:
    """Every view of the job, polled every 0.2 s, until it ends."""
    views = []
    deadline = time.monotonic() + timeout
    while True:
        job = fleet.admin.job(job_id)
        views.append(job)
        if job["state"] in FINAL_STATES:
            return views
        if time.monotonic() > deadline:
            fleet.check(False, f"job {job_id} within {timeout} s", job)
        time.sleep(0.2)


@pytest.mark.slow
def test_estimate_before_transfer_and_progress_during_a_long_job(
    fleet: Fleet, tmp_path: Path
) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    fleet.start_agent(name)
    policy = fleet.name("throttled")
    admin.create_policy(policy, bandwidth_limit=4 * MIB)  # ~6 s for the 24 MiB below
    # A first full backup of another set gives the agent a throughput history for full
    # backups (runs under 0.5 s are not measured, hence the throttle), so the measured job's
    # estimate has seconds, and its accuracy a duration.
    warmup_source = write_files(tmp_path / "warmup", {"w.bin": os.urandom(4 * MIB)})
    warmup = fleet.name("warmup")
    admin.create_set(warmup, name, [str(warmup_source)], policy=policy)
    fleet.run_backup(warmup)

    sizes = {f"part-{i}.bin": 6 * MIB + i for i in range(4)}
    source = write_files(tmp_path / "src", {n: os.urandom(s) for n, s in sizes.items()})
    write_files(source, {"small/a.txt": b"a\n", "small/b.txt": b"bb\n"})
    total_files, total_bytes = len(sizes) + 2, sum(sizes.values()) + 5
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)], policy=policy)

    job = admin.backup_now(set_name)
    views = _watch(fleet, job["id"])
    done = views[-1]
    fleet.check(done["state"] == "succeeded", "the throttled backup", done)

    running = [v for v in views if v["state"] == "running"]
    estimates = [v for v in running if v["estimate"]["files"] is not None]
    assert estimates, f"no estimate seen while running: {[v['state'] for v in views]}"
    # The estimate is exact for an unchanging tree and comes before any progress.
    assert (done["estimate"]["files"], done["estimate"]["bytes"]) == (total_files, total_bytes)
    assert done["estimate"]["seconds"] is not None and done["estimate"]["seconds"] > 0
    assert all(v["estimate"]["files"] is not None for v in views if v["progress"]["bytes"] > 0)
    assert estimates[0]["progress"] == {"files": 0, "bytes": 0, "rate": 0.0, "eta_seconds": None}

    # Progress only grows, and is seen growing while the job runs. (How closely it follows
    # the transfer is test_progress_follows_the_transfer_of_a_throttled_job.)
    seen = [(v["progress"]["bytes"], v["progress"]["files"]) for v in views]
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    # Progress follows the upload, which completes a 16 MiB pack at a time: with 24 MiB it
    # is seen at 0, part-way, and at the end.
    during = {v["progress"]["bytes"] for v in running}
    assert len(during) >= 2, f"progress did not move while running: {seen}"
    assert any(0 < size < total_bytes for size in during), f"no partial progress: {seen}"
    assert any(v["progress"]["rate"] > 0 for v in running)

    # Afterwards: the final numbers, and the estimate's accuracy (actual / estimated).
    assert (done["progress"]["files"], done["progress"]["bytes"]) == (total_files, total_bytes)
    assert done["summary"]["bytes_read"] == total_bytes
    accuracy = done["estimate_accuracy"]
    assert set(accuracy) == {"duration", "bytes"}, describe_job(done)
    assert accuracy["bytes"] == 1.0
    assert accuracy["duration"] > 0


def _uploaded(server_home: Path, before: set[Path]) -> int:
    packs = {p for p in server_home.glob("storage/orgs/*/data/*/*") if not p.name.startswith(".")}
    return sum(p.stat().st_size for p in packs - before if p.exists())


@pytest.mark.slow
def test_progress_follows_the_transfer_of_a_throttled_job(
    fleet: Fleet, tmp_path: Path, server_home: Path
) -> None:
    """Regression: progress counted the bytes *read*, and reading runs up to several 16 MiB
    packs ahead of a throttled upload, so progress said 100 % with an ETA of 0 while most
    of the data was still to be sent."""
    admin = fleet.admin
    name = fleet.name("agent")
    fleet.start_agent(name)
    size = 12 * MIB
    source = write_files(tmp_path / "src", {"big.bin": os.urandom(size)})
    policy = fleet.name("throttled")
    admin.create_policy(policy, bandwidth_limit=2 * MIB)  # ~6 s
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)], policy=policy)
    before = set(server_home.glob("storage/orgs/*/data/*/*"))

    job = admin.backup_now(set_name)
    early = []  # (progress, bytes in storage) while less than half the data was uploaded
    while (view := admin.job(job["id"]))["state"] not in FINAL_STATES:
        uploaded = _uploaded(server_home, before)
        if view["state"] == "running" and uploaded < size // 2:
            early.append((view["progress"], uploaded))
        time.sleep(0.2)
    fleet.check(view["state"] == "succeeded", "the throttled backup", view)
    assert early, "no observation while less than half of the data was uploaded"
    done_too_soon = [
        (progress, uploaded)
        for progress, uploaded in early
        if progress["bytes"] >= size or progress["eta_seconds"] == 0
    ]
    assert done_too_soon == [], (
        "progress said the job was done (100 %, ETA 0) while less than half of it was "
        f"uploaded: {done_too_soon[:3]}"
    )


def test_cancel_running_job(fleet: Fleet, tmp_path: Path) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    fleet.start_agent(name)
    source = write_files(tmp_path / "src", {"big.bin": os.urandom(40 * MIB)})
    policy = fleet.name("throttled")
    admin.create_policy(policy, bandwidth_limit=2 * MIB)  # ~20 s: far longer than the test
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)], policy=policy)

    job = admin.backup_now(set_name)
    fleet.wait_job(job["id"], "running")
    # Past the estimate, the job is archiving (and its first pack is still being sent).
    fleet.observe("the estimate", lambda: admin.job(job["id"])["estimate"]["files"] is not None)
    asked = admin.cancel(job["id"])
    assert (asked["state"], asked["cancel_requested"], asked["reason"]) == (
        "running",
        True,
        "cancelled by admin",
    )

    done = fleet.wait_job(job["id"], timeout=30)
    fleet.check(done["state"] == "cancelled", "the cancelled job", done)
    assert done["reason"] == "cancelled by admin"
    assert done["snapshot_id"] is None
    messages = [(line["level"], line["message"]) for line in done["log"]]
    assert ("warning", "cancelled by admin") in messages  # the server's line
    assert ("warning", "job cancelled: cancelled by admin") in messages  # the agent's line
    assert admin.snapshots(set_name) == []

    with pytest.raises(ApiError) as again:
        admin.cancel(job["id"])
    assert again.value.status == 409
    assert again.value.detail == (f"job {job['id']} already ended as cancelled; nothing to cancel")


def test_cancel_queued_job_ends_it_at_once(fleet: Fleet, tmp_path: Path) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    home = tmp_path / "agent-home"
    fleet.stop(fleet.start_agent(name, home=home))
    source = write_files(tmp_path / "src", {"a.txt": b"a\n"})
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)])
    job = admin.backup_now(set_name)
    assert job["state"] == "queued"

    cancelled = admin.cancel(job["id"])
    assert (cancelled["state"], cancelled["reason"]) == ("cancelled", "cancelled by admin")
    assert cancelled["finished_at"] is not None
    fleet.start_agent(name, home=home)
    # The agent never gets it: a new backup now is a new job, and runs.
    fresh = admin.backup_now(set_name)
    assert fresh["id"] != job["id"]
    assert fleet.wait_job(fresh["id"])["state"] == "succeeded"
    assert admin.job(job["id"])["state"] == "cancelled"

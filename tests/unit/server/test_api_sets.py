"""Policies and backup sets through the API: overlap refusal, backup now, disable, delete."""

from __future__ import annotations

import pytest
from tests.helpers.server import Harness

from roost.server.sets import overlap


@pytest.fixture
def fleet(server: Harness) -> Harness:
    server.enroll("fs1")
    server.enroll("fs2")
    server.policy("nightly", keep_last=3, window="22:00-06:00")
    server.backup_set("docs", "fs1", ["/srv/a"], policy="nightly")
    return server


@pytest.mark.parametrize(
    ("paths", "detail"),
    [
        (["/srv/a/b"], "paths overlap backup set docs: /srv/a contains /srv/a/b"),
        (["/srv"], "paths overlap backup set docs: /srv contains /srv/a"),
        (["/srv/a/"], "paths overlap backup set docs: /srv/a/ contains /srv/a"),
    ],
)
def test_overlapping_paths_on_the_same_agent_are_refused(
    fleet: Harness, paths: list[str], detail: str
) -> None:
    body = {"name": "more", "agent": "fs1", "paths": paths}
    reply = fleet.client.post("/api/v1/sets", json=body, headers=fleet.admin)
    assert (reply.status_code, reply.json()) == (409, {"detail": detail})


def test_same_paths_on_another_agent_or_siblings_are_fine(fleet: Harness) -> None:
    fleet.backup_set("docs2", "fs2", ["/srv/a"])
    fleet.backup_set("sibling", "fs1", ["/srv/ab"])


def test_windows_paths_compare_case_insensitively() -> None:
    from roost.server.catalog.models import BackupSet

    other = BackupSet(name="shares", paths=["D:\\Shares"])
    assert overlap(["d:/shares/HR"], [other]) == (
        "paths overlap backup set shares: D:\\Shares contains d:/shares/HR"
    )


def test_set_and_policy_show_their_next_run(fleet: Harness) -> None:
    reply = fleet.client.get("/api/v1/sets/docs", headers=fleet.admin).json()
    assert reply["next_run"] == "2026-03-03T02:00:00Z"
    assert (reply["policy"], reply["agent"], reply["last_job"]) == ("nightly", "fs1", None)
    policy = fleet.client.get("/api/v1/policies/nightly", headers=fleet.admin).json()
    assert (policy["window"], policy["keep_last"]) == ("22:00-06:00", 3)


def test_unknown_names_are_404_with_advice(fleet: Harness) -> None:
    body = {"name": "x", "agent": "nope", "paths": ["/x"]}
    reply = fleet.client.post("/api/v1/sets", json=body, headers=fleet.admin)
    assert reply.json() == {"detail": "no agent named 'nope'; list them with GET /api/v1/agents"}
    reply = fleet.client.get("/api/v1/policies/nope", headers=fleet.admin)
    assert reply.status_code == 404


def test_duplicate_names_are_409(fleet: Harness) -> None:
    reply = fleet.client.post(
        "/api/v1/policies", json={"name": "nightly", "schedule": "daily 01:00"}, headers=fleet.admin
    )
    assert reply.status_code == 409
    body = {"name": "docs", "agent": "fs2", "paths": ["/x"]}
    assert fleet.client.post("/api/v1/sets", json=body, headers=fleet.admin).status_code == 409


def test_backup_now_twice_is_one_queued_job(fleet: Harness) -> None:
    first = fleet.client.post("/api/v1/sets/docs/backup", headers=fleet.admin)
    second = fleet.client.post("/api/v1/sets/docs/backup", headers=fleet.admin)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert (first.json()["state"], first.json()["trigger"]) == ("queued", "now")


def test_backup_now_with_an_offline_agent_stays_queued(fleet: Harness) -> None:
    fleet.clock.advance(minutes=5)
    job = fleet.client.post("/api/v1/sets/docs/backup", headers=fleet.admin).json()
    assert (job["state"], job["reason"]) == ("queued", "agent offline; queued until it connects")
    assert [j["id"] for j in fleet.poll("fs1")] == [job["id"]]


def test_backup_now_of_a_disabled_set_or_agent_is_refused(fleet: Harness) -> None:
    fleet.client.post("/api/v1/sets/docs/disable", headers=fleet.admin)
    reply = fleet.client.post("/api/v1/sets/docs/backup", headers=fleet.admin)
    assert reply.json() == {"detail": "cannot back up docs: backup set disabled; enable it first"}
    fleet.client.post("/api/v1/sets/docs/enable", headers=fleet.admin)
    agent = fleet.client.post("/api/v1/agents/fs1/disable", headers=fleet.admin).json()
    assert agent["state"] == "disabled"
    reply = fleet.client.post("/api/v1/sets/docs/backup", headers=fleet.admin)
    assert reply.json() == {"detail": "cannot back up docs: agent disabled; enable it first"}


def test_delete_needs_the_matching_confirm(fleet: Harness) -> None:
    reply = fleet.client.delete("/api/v1/sets/docs", headers=fleet.admin)
    assert reply.json() == {
        "detail": "deleting backup set docs also deletes its snapshots; repeat with ?confirm=docs"
    }
    assert reply.status_code == 400
    assert (
        fleet.client.delete("/api/v1/sets/docs?confirm=doc", headers=fleet.admin).status_code == 400
    )
    assert (
        fleet.client.delete("/api/v1/sets/docs?confirm=docs", headers=fleet.admin).status_code
        == 204
    )
    assert fleet.client.get("/api/v1/sets/docs", headers=fleet.admin).status_code == 404

"""The real engine backs up through the server's data API, and the server keeps the catalog:
levels and parents, retention that deletes exactly the forgotten snapshots, snapshot browsing,
restores and set deletion."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.api_backend import ApiBackend
from tests.helpers.server import Harness

from roost.engine.archiver import Archiver, BackupOptions
from roost.engine.crypto import Key, MasterKey
from roost.engine.repository import RepoConfig, Repository


@dataclass
class Agent:
    """Plays the agent's part: poll, run the engine over the data API, report."""

    server: Harness
    name: str
    repo: Repository

    @classmethod
    def connect(cls, server: Harness, name: str) -> Agent:
        headers = server.enroll(name)
        reply = server.client.get("/api/v1/agent/repository", headers=headers).json()
        key = Key(MasterKey.from_json(reply["master_key"]))
        repo = Repository(ApiBackend(server.client, headers), key, RepoConfig(**reply["config"]))
        return cls(server, name, repo)

    def run_next_backup(self) -> dict[str, Any]:
        (job,) = self.server.poll(self.name)
        parent = self.repo.load_snapshot(job["parent_snapshot"]) if job["parent_snapshot"] else None
        options = BackupOptions(tags=job["tags"], parent=parent, hostname=self.name)
        self.server.event(self.name, job["id"], state="running")
        snap, summary = Archiver(self.repo, options, workers=2).run(job["paths"])
        self.server.event(
            self.name,
            job["id"],
            state="succeeded",
            progress={"files_done": summary.files_new, "bytes_done": summary.bytes_read},
            result={"snapshot_id": snap.id, "summary": {"files_new": summary.files_new}},
        )
        return job


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    return root


def backup_now(server: Harness, name: str) -> None:
    reply = server.client.post(f"/api/v1/sets/{name}/backup", headers=server.admin)
    assert reply.status_code == 201, reply.text


def snapshot_ids(server: Harness, name: str) -> list[str]:
    reply = server.client.get(f"/api/v1/sets/{name}/snapshots", headers=server.admin)
    return [s["id"] for s in reply.json()]


def test_retention_after_backups_deletes_exactly_the_forgotten(
    server: Harness, tree: Path, tmp_path: Path
) -> None:
    agent = Agent.connect(server, "fs1")
    server.policy("keep2", keep_last=2)
    server.backup_set("docs", "fs1", [str(tree)], policy="keep2")
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.txt").write_text("gamma")
    server.backup_set("other", "fs1", [str(other)], policy="keep2")
    backup_now(server, "other")
    agent.run_next_backup()
    made = []
    for round_ in range(4):
        (tree / "a.txt").write_text(f"version {round_}\n")
        server.clock.advance(minutes=10)
        backup_now(server, "docs")
        job = agent.run_next_backup()
        made.append(server.job(job["id"]))
    assert [j["level"] for j in made] == ["full", "incremental", "incremental", "incremental"]
    assert made[1]["level_reason"] == f"previous snapshot {made[0]['snapshot_id'][:8]}"
    kept = [made[2]["snapshot_id"], made[3]["snapshot_id"]]
    assert snapshot_ids(server, "docs") == kept
    assert len(snapshot_ids(server, "other")) == 1  # another set's snapshots are not touched
    assert made[2]["log"][-1]["message"] != ""  # retention reports into the job log
    log3 = server.job(made[3]["id"])["log"][-1]["message"]
    assert log3 == f"retention: forgot 1 snapshot(s): {made[1]['snapshot_id'][:8]}"
    stored = {s for s in agent.repo.snapshot_ids()}
    assert made[0]["snapshot_id"] not in stored and made[1]["snapshot_id"] not in stored


def test_a_deleted_parent_makes_the_next_backup_full(server: Harness, tree: Path) -> None:
    agent = Agent.connect(server, "fs1")
    server.backup_set("docs", "fs1", [str(tree)])
    backup_now(server, "docs")
    first = agent.run_next_backup()
    snapshot = server.job(first["id"])["snapshot_id"]
    server.state.repos.repository(server.state.org_id).delete_snapshot(snapshot)
    backup_now(server, "docs")
    second = server.job(agent.run_next_backup()["id"])
    assert (second["level"], second["level_reason"]) == ("full", "no usable previous snapshot")


def test_browse_snapshots_restore_and_delete(server: Harness, tree: Path) -> None:
    agent = Agent.connect(server, "fs1")
    server.backup_set("docs", "fs1", [str(tree)])
    backup_now(server, "docs")
    job = server.job(agent.run_next_backup()["id"])
    (listed,) = server.client.get("/api/v1/sets/docs/snapshots", headers=server.admin).json()
    assert (listed["id"], listed["short_id"]) == (job["snapshot_id"], job["snapshot_id"][:8])
    entries = server.client.get(
        f"/api/v1/sets/docs/snapshots/{listed['short_id']}/ls",
        params={"path": str(tree)},
        headers=server.admin,
    ).json()
    assert sorted((e["name"], e["type"], e["size"]) for e in entries) == [
        ("a.txt", "file", 6),
        ("sub", "dir", 0),
    ]
    assert entries[0]["path"].startswith(str(tree))
    missing = server.client.get(
        "/api/v1/sets/docs/snapshots/latest/ls", params={"path": "/nope"}, headers=server.admin
    )
    assert missing.status_code == 404
    restore = server.client.post(
        "/api/v1/restores",
        json={"set": "docs", "target": "/tmp/restore", "paths": [str(tree / "a.txt")]},
        headers=server.admin,
    )
    assert restore.status_code == 201
    (assignment,) = server.poll("fs1")
    assert assignment["kind"] == "restore"
    assert assignment["restore"] == {
        "snapshot_id": job["snapshot_id"],
        "paths": [str(tree / "a.txt")],
        "target": "/tmp/restore",
        "conflict": "overwrite",
    }
    server.event("fs1", assignment["id"], state="succeeded")
    deleted = server.client.delete("/api/v1/sets/docs?confirm=docs", headers=server.admin)
    assert deleted.status_code == 204
    assert agent.repo.snapshot_ids() == []

"""Test harness for the control plane: an app on a temp catalog, a settable clock, and helpers
that log in, enroll agents and create policies and sets through the real HTTP API."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from roost.server.app import create_app, prepare_state
from roost.server.config import ServerSettings
from roost.server.state import ServerState

ADMIN_PASSWORD = "correct horse battery staple"
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday


@dataclass
class FakeClock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def make_settings(home: Path, db_url: str | None = None, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "home": home,
        "db_url": db_url,
        "storage_url": f"memory://roost-test-{secrets.token_hex(8)}",
        "scheduler_enabled": False,
        "poll_wait_seconds": 2.0,
        "poll_recheck_seconds": 0.05,
        "insecure_http": True,
        "session_hours": 24 * 30.0,  # tests move the clock by days
    }
    values.update(overrides)
    return ServerSettings(**values)


@dataclass
class Harness:
    client: TestClient
    state: ServerState
    clock: FakeClock
    admin_token: str = ""
    agents: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (id, secret)

    @property
    def admin(self) -> dict[str, str]:
        if not self.admin_token:
            reply = self.client.post(
                "/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            assert reply.status_code == 200, reply.text
            self.admin_token = reply.json()["token"]
        return {"Authorization": f"Bearer {self.admin_token}"}

    def agent_headers(self, name: str) -> dict[str, str]:
        agent_id, secret = self.agents[name]
        return {"Authorization": f"Bearer {agent_id}.{secret}"}

    def new_token(self, **body: Any) -> str:
        reply = self.client.post("/api/v1/tokens", json=body, headers=self.admin)
        assert reply.status_code == 201, reply.text
        return str(reply.json()["token"])

    def enroll(self, name: str = "fs1", *, online: bool = True) -> dict[str, str]:
        body = {"token": self.new_token(), "name": name, "hostname": name, "os": "linux"}
        reply = self.client.post("/api/v1/agent/enroll", json={**body, "version": "0.1.0"})
        assert reply.status_code == 200, reply.text
        self.agents[name] = (reply.json()["agent_id"], reply.json()["secret"])
        if online:
            self.poll(name, wait_seconds=0)
        return self.agent_headers(name)

    def poll(self, name: str, **overrides: Any) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "boot_id": "boot-1",
            "hostname": name,
            "os": "linux",
            "version": "0.1.0",
            "running_jobs": [],
            "wait_seconds": 0,
        }
        body.update(overrides)
        reply = self.client.post("/api/v1/agent/poll", json=body, headers=self.agent_headers(name))
        assert reply.status_code == 200, reply.text
        jobs: list[dict[str, Any]] = reply.json()["jobs"]
        return jobs

    def policy(self, name: str = "nightly", **body: Any) -> dict[str, Any]:
        payload = {"name": name, "schedule": "daily 02:00", **body}
        reply = self.client.post("/api/v1/policies", json=payload, headers=self.admin)
        assert reply.status_code == 201, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def backup_set(
        self, name: str = "docs", agent: str = "fs1", paths: list[str] | None = None, **body: Any
    ) -> dict[str, Any]:
        payload = {"name": name, "agent": agent, "paths": paths or ["/srv/docs"], **body}
        reply = self.client.post("/api/v1/sets", json=payload, headers=self.admin)
        assert reply.status_code == 201, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def event(self, agent: str, job_id: str, **body: Any) -> dict[str, Any]:
        reply = self.client.post(
            f"/api/v1/agent/jobs/{job_id}/events", json=body, headers=self.agent_headers(agent)
        )
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        reply = self.client.get(f"/api/v1/jobs/{job_id}", headers=self.admin)
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result


@contextmanager
def running_server(settings: ServerSettings, clock: FakeClock | None = None) -> Iterator[Harness]:
    clock = clock or FakeClock()
    state = prepare_state(settings, clock)
    app = create_app(settings, state=state)
    with TestClient(app) as client:
        yield Harness(client, state, clock)

"""Shared pieces of the workflow tests (DESIGN.md §1; fixtures are in conftest.py): real
processes, one `roost server` per module and per test any number of `roost agent run`
processes, all stopped in teardown (also on failure).

The server runs with short timings so the workflow is observable in seconds:

* ``ROOST_POLL_WAIT_SECONDS=1``: agents poll (= heartbeat) about once a second;
* ``ROOST_OFFLINE_AFTER_SECONDS=3``: an agent that stopped is offline 3 s later (three missed
  heartbeats, so a running agent never flaps offline);
* ``ROOST_SCHEDULER_INTERVAL_SECONDS=1``: a schedule slot is planned within a second of its time.

Tests share the module's server and organisation, so every set and agent name is unique per
test (``fleet.name("src")``). ``fleet.diagnose()`` returns the stderr tails of the server and
every agent of the test; every wait appends it to its failure message.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.api_client import FINAL_STATES, AdminClient, Json
from tests.helpers.processes import (
    AgentProcess,
    RoostProcess,
    ServerProcess,
    enroll_agent,
    start_agent,
)

SERVER_ENV = {
    "ROOST_KDF_PROFILE": "test",
    "ROOST_POLL_WAIT_SECONDS": "1",
    "ROOST_POLL_RECHECK_SECONDS": "0.2",
    "ROOST_OFFLINE_AFTER_SECONDS": "3",
    "ROOST_SCHEDULER_INTERVAL_SECONDS": "1",
}
AGENT_ENV = {"ROOST_KDF_PROFILE": "test"}
TAIL_LINES = 30
JOB_TIMEOUT = 60.0


def tail(process: RoostProcess, lines: int = TAIL_LINES) -> str:
    """The last lines a process wrote to stderr, and whether it still runs."""
    code = process.process.poll()
    state = "running" if code is None else f"exited with {code}"
    text = "\n".join(process.stderr().splitlines()[-lines:])
    return f"[{process.label}, pid {process.pid}, {state}]\n{text}"


@dataclass
class Fleet:
    """The agents of one test, the server they talk to, and waits that explain failures."""

    server: ServerProcess
    admin: AdminClient
    workdir: Path
    prefix: str
    agents: list[AgentProcess] = field(default_factory=list)
    tails: dict[str, str] = field(default_factory=dict)  # of agents that already stopped

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    # -- agents --------------------------------------------------------------------------

    def enroll(self, name: str, home: Path | None = None, **extra: Any) -> Path:
        """Enroll ``name`` without running it (it stays offline); return its home."""
        home = home or self.workdir / "agents" / name
        home.parent.mkdir(parents=True, exist_ok=True)
        token = self.admin.create_token(note=f"workflow test agent {name}")
        enroll_agent(home, self.server, token, name, env=dict(AGENT_ENV), **extra)
        return home

    def start_agent(
        self, name: str, *, home: Path | None = None, wait_online: bool = True, **extra: Any
    ) -> AgentProcess:
        """Run agent ``name``: enrolled with a fresh token unless ``home`` already is (then a
        new process with the same credentials, as after a restart)."""
        home = home or self.workdir / "agents" / name
        home.parent.mkdir(parents=True, exist_ok=True)
        token = None
        if not (home / "agent.json").exists():
            token = self.admin.create_token(note=f"workflow test agent {name}")
        agent = start_agent(home, self.server, token, name=name, env=dict(AGENT_ENV), **extra)
        self.agents.append(agent)
        if wait_online:
            self.wait_agent_state(name, "online")
        return agent

    def stop(self, agent: AgentProcess, *, how: str = "stop", wait_offline: bool = False) -> None:
        """SIGTERM (``how="stop"``) or SIGKILL the agent; with ``wait_offline`` also wait
        until the server sees it offline (3 s without a heartbeat)."""
        if how == "kill":
            agent.kill()
        else:
            agent.stop()
        self.tails[f"{agent.name} (pid {agent.pid}, {how})"] = tail(agent)
        if wait_offline:
            self.wait_agent_state(agent.name, "offline")

    def stop_all(self) -> None:
        for agent in self.agents:
            try:
                agent.stop()
            except Exception as exc:  # teardown must reach every process
                print(f"stopping {agent!r} failed: {exc}")

    def wait_agent_state(self, name: str, state: str, timeout: float = 20.0) -> Json:
        def probe() -> Json | None:
            found = [a for a in self.admin.agents() if a["name"] == name]
            return found[0] if found and found[0]["state"] == state else None

        agent: Json = self.admin.wait_for(
            f"agent {name} to be {state}", probe, timeout=timeout, diagnose=self.diagnose
        )
        return agent

    # -- jobs ----------------------------------------------------------------------------

    def wait_job(self, job_id: str, *states: str, timeout: float = JOB_TIMEOUT) -> Json:
        """Wait for one of ``states`` (default: any final state) and return the job."""
        return self.admin.wait_job(
            job_id, states or FINAL_STATES, timeout=timeout, diagnose=self.diagnose
        )

    def run_backup(self, set_name: str, state: str = "succeeded") -> Json:
        """Backup now, wait until it ends, and insist on ``state``."""
        job = self.admin.backup_now(set_name)
        done = self.wait_job(job["id"])
        self.check(done["state"] == state, f"backup of {set_name}", done)
        return done

    def restore(self, set_name: str, target: Path, state: str = "succeeded", **body: Any) -> Json:
        job = self.admin.restore(set_name, str(target), **body)
        done = self.wait_job(job["id"])
        self.check(done["state"] == state, f"restore of {set_name}", done)
        return done

    def check(self, condition: bool, what: str, job: Json | None = None) -> None:
        if not condition:
            shown = "" if job is None else "\n" + describe_job(job)
            raise AssertionError(f"{what} is not as expected{shown}\n{self.diagnose()}")

    def observe(self, what: str, probe: Callable[[], Any], timeout: float = JOB_TIMEOUT) -> Any:
        return self.admin.wait_for(what, probe, timeout=timeout, diagnose=self.diagnose)

    def diagnose(self) -> str:
        parts = [f"--- server stderr (last {TAIL_LINES} lines) ---", tail(self.server)]
        for label, text in self.tails.items():
            parts += [f"--- agent {label} stderr ---", text]
        for agent in self.agents:
            if agent.alive():
                parts += [f"--- agent {agent.name} stderr ---", tail(agent)]
        return "\n".join(parts)


def describe_job(job: Json) -> str:
    keys = ("id", "kind", "state", "trigger", "level", "level_reason", "reason", "summary")
    lines = [f"job {', '.join(f'{k}={job.get(k)!r}' for k in keys)}"]
    lines += [f"  log: {line['level']}: {line['message']}" for line in job.get("log", [])]
    return "\n".join(lines)


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def restored(target: Path, source: Path) -> Path:
    """Where a whole-snapshot restore to ``target`` puts ``source`` (its absolute path)."""
    return target / source.relative_to("/")


def file_identity(path: Path) -> tuple[int, int, int, int, int]:
    """What an incremental backup compares: size, mtime, ctime, inode (and the mode)."""
    st = os.lstat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, stat.S_IMODE(st.st_mode))


def deadline(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end

"""The managed path for the ``roost-agent`` tool: a real ``roost server`` and ``roost agent``.

For each run (untimed): ``roost server`` with its own home, SQLite catalog and local storage
directory (the run's ``repo``) on a free loopback HTTPS port; an enrolment token from the admin
API; ``roost agent enroll`` (pinning the server's certificate) and ``roost agent run``; a backup
set for the dataset. The timed steps are then ``bench/agentctl.py`` commands that ask the server
for a backup (or restore) and wait until the job is over, as an admin would.

Both processes are stopped (SIGTERM, then SIGKILL after a grace period) when the run ends,
whether it succeeded, failed or was interrupted. The agent goes first: a server waits for an
open long poll before it exits, so polls are kept short (``POLL_WAIT_SECONDS``).

CPU time of a long-running process tree is read from ``/proc``: utime + stime of every live
process in the tree, plus cutime + cstime (descendants it has already reaped, such as worker
processes that ended). The difference between two readings is what the tree spent in between.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from roost.agent.transport import (
    fetch_certificate,
    fingerprint_of,
    parse_server_url,
    pinned_context,
)

START_TIMEOUT = 60.0
STOP_GRACE = 20.0
POLL_WAIT_SECONDS = 5  # the server's longest agent poll: bounds how long its shutdown waits
SET_NAME = "bench"
AGENT_NAME = "bench-agent"
STATE_NAME = "agent-bench.json"  # under the tool's home: what agentctl.py needs

_LISTENING = re.compile(r"listening on (https?://\S+?)/?$", re.MULTILINE)
_FINGERPRINT = re.compile(r"fingerprint \(SHA-256\): ([0-9A-F:]{95})")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- pure helpers (unit tested) -----------------------------------------------------------------


def parse_banner(text: str) -> tuple[str, str | None] | None:
    """(URL, fingerprint or None) from `roost server`'s start-up lines, None before they appear."""
    url = _LISTENING.search(text)
    if url is None:
        return None
    found = _FINGERPRINT.search(text)
    return url.group(1), found.group(1) if found else None


def stat_cpu_ticks(stat: str) -> tuple[int, int]:
    """(user, system) clock ticks from a /proc/PID/stat line, reaped children included.

    The command name (field 2) may contain spaces and parentheses: fields are counted from
    the last ')'. utime, stime, cutime and cstime are fields 14-17.
    """
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return utime + cutime, stime + cstime


@dataclass(frozen=True)
class CpuReading:
    user_seconds: float
    sys_seconds: float

    def __sub__(self, earlier: CpuReading) -> CpuReading:
        return CpuReading(
            round(max(0.0, self.user_seconds - earlier.user_seconds), 3),
            round(max(0.0, self.sys_seconds - earlier.sys_seconds), 3),
        )


# --- /proc --------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The pids of a process's live children (all its threads'), from /proc."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
    except OSError:
        pass
    return found


def tree_cpu(pid: int) -> CpuReading:
    """CPU time of a process and all its descendants, live and reaped, so far."""
    user = system = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/stat") as handle:
                ticks = stat_cpu_ticks(handle.read())
        except (OSError, ValueError, IndexError):
            continue
        user, system = user + ticks[0], system + ticks[1]
        stack.extend(children(current))
    return CpuReading(user / _CLOCK_TICKS, system / _CLOCK_TICKS)


def high_water_rss(pid: int) -> int:
    """VmHWM of one process: its peak resident set since it started."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


# --- the service --------------------------------------------------------------------------------


class ServiceError(RuntimeError):
    pass


@dataclass
class _Process:
    label: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        return "".join(
            path.read_text(errors="replace") if path.exists() else ""
            for path in (self.out, self.err)
        )

    def describe(self) -> str:
        code = self.popen.poll()
        state = "running" if code is None else f"exited with {code}"
        return f"{self.label} ({state}); end of its output:\n{self.output()[-1500:]}"

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``STOP_GRACE``; the exit code (None if unknown)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
        try:
            return self.popen.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class AgentService:
    """A running server and agent; ``watched()`` names the processes doing a step's work."""

    server: _Process
    agent: _Process
    state_file: Path

    rss_label = "agent"  # whose tree's peak RSS is the step's peak RSS

    def watched(self) -> dict[str, int]:
        return {"agent": self.agent.popen.pid, "server": self.server.popen.pid}

    def describe(self) -> str:
        return f"server pid {self.server.popen.pid}, agent pid {self.agent.popen.pid}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _launch(label: str, argv: list[str], env: dict[str, str], logs: Path) -> _Process:
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{label}.out", logs / f"{label}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        popen = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # ^C reaches the benchmark only; it stops them itself
        )
    return _Process(label, popen, out, err)


def _wait_for(process: _Process, what: str, found: Any, timeout: float = START_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = found(process.output())
        if value:
            return value
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise ServiceError(f"waiting for {what}: the {process.describe()}")
        time.sleep(0.1)


class Admin:
    """The admin API, with the server's certificate pinned."""

    def __init__(self, url: str, fingerprint: str | None, password: str) -> None:
        address = parse_server_url(url)
        der = fetch_certificate(address)
        if fingerprint is not None and fingerprint_of(der) != fingerprint:
            raise ServiceError(f"{url} presents another certificate than it printed")
        self.client = httpx.Client(base_url=f"{url}/api/v1", verify=pinned_context(der), timeout=60)
        self.token = self.call("POST", "/login", {"username": "admin", "password": password})[
            "token"
        ]
        self.client.headers["Authorization"] = f"Bearer {self.token}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        reply = self.client.request(method, path, json=body)
        if reply.status_code not in (200, 201):
            raise ServiceError(f"{method} {path}: HTTP {reply.status_code}: {reply.text[:500]}")
        return reply.json() if reply.content else None

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def agent_service(
    roost: str, folder: Path, storage: Path, agent_env: dict[str, str], source: Path
) -> Iterator[AgentService]:
    """Server (home ``folder/server``, storage ``storage``) and agent (home ``$HOME/agent``),
    enrolled, with a backup set for ``source``; stopped on exit."""
    home = Path(agent_env["HOME"])
    server_home, logs = folder / "server", folder / "logs"
    server_tmp = folder / "server-tmp"
    for path in (server_tmp, storage):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(16)
    server_env = {
        **agent_env,
        "HOME": str(server_tmp),
        "TMPDIR": str(server_tmp),
        "PYTHONUNBUFFERED": "1",
        "ROOST_ADMIN_PASSWORD": password,
        "ROOST_STORAGE_URL": str(storage),
        "ROOST_POLL_WAIT_SECONDS": str(POLL_WAIT_SECONDS),
        "ROOST_SCHEDULER_ENABLED": "false",  # no policy, no schedule; no nightly maintenance
    }
    started: list[_Process] = []
    try:
        try:
            server, agent, state_file = _setup(
                roost, server_home, server_env, agent_env, logs, home, source, password, started
            )
        except (OSError, httpx.HTTPError, subprocess.SubprocessError) as exc:
            raise ServiceError(f"{type(exc).__name__}: {exc}") from exc
        yield AgentService(server=server, agent=agent, state_file=state_file)
    finally:
        for process in reversed(started):  # the agent first, then the server
            process.stop()


def _setup(
    roost: str,
    server_home: Path,
    server_env: dict[str, str],
    agent_env: dict[str, str],
    logs: Path,
    home: Path,
    source: Path,
    password: str,
    started: list[_Process],
) -> tuple[_Process, _Process, Path]:
    server = _start_server(roost, server_home, server_env, logs, started)
    url, fingerprint = _wait_for(server, "the server to listen", parse_banner)
    admin = Admin(url, fingerprint, password)
    try:
        token = admin.call("POST", "/tokens", {"uses": 1, "note": "bench"})["token"]
        agent_home = home / "agent"
        enroll = [roost, "agent", "enroll", "--server", url, "--token", token]
        enroll += ["--home", str(agent_home), "--name", AGENT_NAME]
        if fingerprint is not None:
            enroll += ["--fingerprint", fingerprint]
        done = subprocess.run(
            enroll,
            env={**agent_env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise ServiceError(f"roost agent enroll failed: {done.stderr[-1500:]}")
        agent = _launch(
            "agent",
            [roost, "agent", "run", "--home", str(agent_home)],
            {**agent_env, "PYTHONUNBUFFERED": "1"},
            logs,
        )
        started.append(agent)
        _wait_for(agent, "the agent to connect", lambda text: "INFO connected" in text)
        admin.call("POST", "/sets", {"name": SET_NAME, "agent": AGENT_NAME, "paths": [str(source)]})
        state = {"url": url, "fingerprint": fingerprint, "token": admin.token, "set": SET_NAME}
    finally:
        admin.close()
    state_file = home / STATE_NAME
    state_file.write_text(json.dumps(state))
    return server, agent, state_file


def _start_server(
    roost: str, home: Path, env: dict[str, str], logs: Path, started: list[_Process]
) -> _Process:
    for attempt in range(3):  # a free port may be taken before the server binds it
        port = _free_port()
        argv = [roost, "server", "--home", str(home), "--bind", f"127.0.0.1:{port}"]
        server = _launch(f"server-{attempt}", argv, env, logs)
        started.append(server)
        try:
            _wait_for(server, "the server to start", lambda text: "Uvicorn running on" in text)
            return server
        except ServiceError as exc:
            server.stop()
            started.remove(server)
            if "address already in use" not in str(exc).lower() or attempt == 2:
                raise
    raise AssertionError("unreachable")

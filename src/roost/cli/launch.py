"""``make run``: the whole product on its embedded defaults, on this machine.

Starts ``roost server`` (SQLite catalog, local storage, HTTPS with a self-signed certificate,
dashboard) and a local ``roost agent``, enrolls the agent on first use, creates a daily policy
and a backup set for ROOST_PROTECT, runs the first backup with a progress bar, then prints the
dashboard address and the admin login and keeps both processes running until Ctrl-C.

Environment: ROOST_HOME (default ./roost-data; server/, agent/ and logs/ live there),
ROOST_PROTECT (default: your home directory), ROOST_BIND (default 127.0.0.1:8443),
ROOST_ADMIN_PASSWORD (default: generated once and kept in ROOST_HOME/admin-password).
Running it again reuses everything and makes an incremental backup.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from roost.agent.transport import (
    fetch_certificate,
    fingerprint_of,
    parse_server_url,
    pinned_context,
)

console = Console(stderr=True)
FINAL = {"succeeded", "succeeded_with_errors", "failed", "aborted", "cancelled", "skipped"}
POLICY = {
    "name": "daily",
    "schedule": "daily 02:00",
    "keep_daily": 7,
    "keep_weekly": 4,
    "keep_monthly": 12,
}


@dataclass(frozen=True)
class Layout:
    home: Path
    protect: Path
    bind: str

    @property
    def url(self) -> str:
        return f"https://{self.bind}"

    @property
    def server_home(self) -> Path:
        return self.home / "server"

    @property
    def agent_home(self) -> Path:
        return self.home / "agent"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @classmethod
    def from_environment(cls) -> Layout:
        home = Path(os.environ.get("ROOST_HOME") or "./roost-data").expanduser().absolute()
        protect = Path(os.environ.get("ROOST_PROTECT") or Path.home()).expanduser().absolute()
        return cls(home, protect, os.environ.get("ROOST_BIND") or "127.0.0.1:8443")


def roost_command() -> list[str]:
    script = shutil.which("roost", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "roost.cli.main"]


def admin_password(layout: Layout) -> str:
    given = os.environ.get("ROOST_ADMIN_PASSWORD")
    if given:
        return given
    path = layout.home / "admin-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def start(
    name: str, args: list[str], layout: Layout, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    log = open(layout.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen(
        [*roost_command(), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_for_port(layout: Layout, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    host, _, port = layout.bind.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            fail(f"the server exited (code {server.returncode}); see {layout.logs / 'server.log'}")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    fail(f"the server did not start within {timeout:.0f} s; see {layout.logs / 'server.log'}")


def fail(message: str) -> None:
    console.print(f"[red]roost: error:[/red] {message}")
    raise SystemExit(1)


class Admin:
    """Just enough of the admin API for first-run setup (pinned TLS, bearer session)."""

    def __init__(self, layout: Layout, password: str) -> None:
        address = parse_server_url(layout.url)
        der = fetch_certificate(address)
        self.fingerprint = fingerprint_of(der)
        self.client = httpx.Client(
            base_url=f"{layout.url}/api/v1", verify=pinned_context(der), timeout=30
        )
        reply = self.call("POST", "/login", {"username": "admin", "password": password})
        self.client.headers["Authorization"] = f"Bearer {reply['token']}"

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        reply = self.client.request(method, path, json=body)
        if reply.status_code not in ok:
            detail = reply.json().get("detail") if reply.content else reply.reason_phrase
            fail(f"{method} {path}: {detail}")
        return reply.json() if reply.content else None

    def exists(self, path: str) -> bool:
        return self.client.get(path).status_code == 200


def set_name_for(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name or "root").strip("-.") or "root"
    return f"{name}-{socket.gethostname()}"[:60]


def ensure_agent(layout: Layout, admin: Admin) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()) or "local"
    if not (layout.agent_home / "agent.json").exists():
        token = admin.call("POST", "/tokens", {"uses": 1, "note": "make run"})["token"]
        args = [
            "agent",
            "enroll",
            "--server",
            layout.url,
            "--token",
            token,
            "--fingerprint",
            admin.fingerprint,
            "--name",
            name,
            "--home",
            str(layout.agent_home),
        ]
        done = subprocess.run([*roost_command(), *args], capture_output=True, text=True)
        if done.returncode:
            fail(f"enrolling the local agent failed: {done.stderr.strip()}")
    return name


def ensure_set(layout: Layout, admin: Admin, agent: str) -> str:
    if not admin.exists(f"/policies/{POLICY['name']}"):
        admin.call("POST", "/policies", POLICY)
    name = set_name_for(layout.protect)
    if not admin.exists(f"/sets/{name}"):
        excludes = []
        if layout.home.is_relative_to(layout.protect):  # never back up our own repository
            excludes.append("/" + str(layout.home.relative_to(layout.protect)))
        admin.call(
            "POST",
            "/sets",
            {
                "name": name,
                "agent": agent,
                "paths": [str(layout.protect)],
                "excludes": excludes,
                "policy": POLICY["name"],
            },
        )
    return name


def watch_job(admin: Admin, job_id: str) -> dict[str, Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("backup: waiting for the agent", total=None)
        while True:
            job = admin.call("GET", f"/jobs/{job_id}")
            _show(bar, task, job)
            if job["state"] in FINAL:
                return dict(job)
            time.sleep(0.5)


def _show(bar: Progress, task: Any, job: dict[str, Any]) -> None:
    estimate = job.get("estimate") or {}
    progress = job.get("progress") or {}
    bar.update(
        task,
        description=f"backup {job['state']}",
        total=estimate.get("bytes") or None,
        completed=progress.get("bytes_done") or 0,
    )


def port_in_use(layout: Layout) -> bool:
    host, _, port = layout.bind.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
            return True
    except OSError:
        return False


def _stop_on_signal(signum: int, frame: object) -> None:
    # `kill`, `timeout` and closing the terminal must stop server and agent too: they run in
    # their own sessions (so Ctrl-C reaches them only through us) and would outlive us
    raise SystemExit(128 + signum)


def main() -> int:
    layout = Layout.from_environment()
    for folder in (layout.home, layout.logs):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if port_in_use(layout):
        fail(
            f"something already listens on {layout.bind} (another `make run`?); stop it, "
            "or choose another address with ROOST_BIND=127.0.0.1:PORT"
        )
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    password = admin_password(layout)
    env = {**os.environ, "ROOST_ADMIN_PASSWORD": password}
    server = start(
        "server", ["server", "--home", str(layout.server_home), "--bind", layout.bind], layout, env
    )
    agent: subprocess.Popen[bytes] | None = None
    try:
        wait_for_port(layout, server)
        admin = Admin(layout, password)
        agent_name = ensure_agent(layout, admin)
        agent = start("agent", ["agent", "run", "--home", str(layout.agent_home)], layout, env)
        set_name = ensure_set(layout, admin, agent_name)
        job = admin.call("POST", f"/sets/{set_name}/backup")
        done = watch_job(admin, job["id"])
        report(layout, admin, set_name, done, password)
        while server.poll() is None:
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in (agent, server):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (agent, server):
            if process is not None:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


def report(layout: Layout, admin: Admin, set_name: str, job: dict[str, Any], password: str) -> None:
    summary = job.get("summary") or {}
    failed = job["state"] not in ("succeeded", "succeeded_with_errors")
    reason = f" ({job['reason']})" if failed and job.get("reason") else ""
    console.print(f"backup of {layout.protect}: [bold]{job['state']}[/bold]{reason}")
    if summary:
        console.print(
            f"  files: {summary.get('files_new', 0)} new, "
            f"{summary.get('files_changed', 0)} changed, "
            f"{summary.get('files_unchanged', 0)} unchanged; "
            f"stored {summary.get('bytes_stored', 0):,} bytes"
        )
    console.print(
        f"""
Dashboard:   {layout.url}/   (user [bold]admin[/bold], password [bold]{password}[/bold])
Certificate: SHA-256 {admin.fingerprint}
Logs:        {layout.logs}/

Try the admin CLI in another terminal:
  export ROOST_SERVER={layout.url} ROOST_FINGERPRINT={admin.fingerprint}
  export ROOST_ADMIN_PASSWORD='{password}'
  .venv/bin/roost ctl jobs
  .venv/bin/roost ctl snapshots {set_name}
  .venv/bin/roost ctl restore {set_name} --snapshot latest --target /tmp/roost-restore \\
      --conflict rename

Server and agent keep running; press Ctrl-C to stop them.""",
        soft_wrap=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())

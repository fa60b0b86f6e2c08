"""Real `roost server` and `roost agent` processes for integration and end-to-end tests.

    server = start_server(tmp / "server")            # HTTPS on a free loopback port
    try:
        agent = start_agent(tmp / "agent", server, token)   # enroll, then `roost agent run`
        ...
    finally:
        agent.stop(); server.stop()

Both are also context managers that stop the process on exit. Every process writes its
stdout and stderr to files (never a pipe that could fill up and block it); a failure to start
or a timeout raises ``ProcessError`` whose message holds the command, the exit code and the
end of both logs. ``ctl_runner(server, config)`` runs `roost ctl` commands against a server.

Servers and agents run with ``ROOST_KDF_PROFILE=test``, ``TZ=UTC`` and none of the caller's
other ``ROOST_*`` variables; ``env`` adds or overrides variables (e.g. ``ROOST_POLL_WAIT_SECONDS``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.helpers.cli import ROOST, Result, Roost

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SERVER_POLL_WAIT = 2  # seconds; see start_server
LOG_TAIL = 4000  # characters of each log shown in a failure message
_LISTENING = re.compile(r"listening on (\S+?)/?$", re.MULTILINE)
_FINGERPRINT = re.compile(r"fingerprint \(SHA-256\): ([0-9A-F:]{95})")
_PASSWORD = re.compile(r"user 'admin', password: (\S+)")
_T = TypeVar("_T")


class ProcessError(AssertionError):
    """A process did not start, did not answer in time, or failed."""


def base_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without ROOST_* (and terminal sizes), with the test KDF and UTC."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("ROOST_", "COLUMNS", "LINES"))}
    defaults = {"ROOST_KDF_PROFILE": "test", "TZ": "UTC", "PYTHONUNBUFFERED": "1"}
    return {**kept, **defaults, **(env or {})}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], _T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
    describe: Callable[[], str] = lambda: "",
) -> _T:
    """Call ``check`` until it returns something other than None/False; raise after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise ProcessError(f"timed out after {timeout:g} s waiting for {what}\n{describe()}")
        time.sleep(interval)


@dataclass
class RoostProcess:
    """One `roost` child process with its logs; ``stop()`` and ``kill()`` are idempotent."""

    label: str
    args: list[str]
    process: subprocess.Popen[bytes]
    log_dir: Path

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.label}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.label}.stderr.log"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stdout(self) -> str:
        return _read(self.stdout_path)

    def stderr(self) -> str:
        return _read(self.stderr_path)

    def describe(self) -> str:
        """The command, its state and the end of both logs: for failure messages."""
        code = self.process.poll()
        state = "running" if code is None else f"exited with {code}"
        return (
            f"--- {self.label} (pid {self.pid}, {state}): {' '.join(self.args)}\n"
            f"--- stdout (end):\n{self.stdout()[-LOG_TAIL:]}\n"
            f"--- stderr (end):\n{self.stderr()[-LOG_TAIL:]}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (both servers and agents shut down cleanly on it), then SIGKILL."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        return self.process.wait(STOP_TIMEOUT)

    def wait_for_output(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Wait until stdout or stderr matches ``pattern`` (a regex); fail if the process dies."""
        compiled = re.compile(pattern, re.MULTILINE)

        def seen() -> re.Match[str] | None:
            found = compiled.search(self.stdout()) or compiled.search(self.stderr())
            if found is None and not self.alive():
                raise ProcessError(
                    f"{self.label} exited before printing {pattern!r}\n{self.describe()}"
                )
            return found

        return wait_until(
            seen, timeout, f"{self.label} to print {pattern!r}", describe=self.describe
        )

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


_P = TypeVar("_P", bound=RoostProcess)


@dataclass
class ServerProcess(RoostProcess):
    home: Path = field(default_factory=Path)
    url: str = ""  # https://127.0.0.1:PORT (http:// with --insecure-http)
    fingerprint: str | None = None  # AB:CD:... as printed; None over plain HTTP
    admin_password: str = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def ctl_env(self) -> dict[str, str]:
        """What `roost ctl` needs to reach and log in to this server."""
        env = {"ROOST_SERVER": self.url, "ROOST_ADMIN_PASSWORD": self.admin_password}
        if self.fingerprint is not None:
            env["ROOST_FINGERPRINT"] = self.fingerprint
        return env


@dataclass
class AgentProcess(RoostProcess):
    home: Path = field(default_factory=Path)
    name: str = ""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _launch(
    cls: type[_P],
    label: str,
    args: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    prefix: Sequence[str] = (),
    **extra: Any,
) -> _P:
    assert ROOST is not None, "the roost console script is not installed in this venv"
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [*prefix, ROOST, *args]
    stdout_path, stderr_path = log_dir / f"{label}.stdout.log", log_dir / f"{label}.stderr.log"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            command,
            env=base_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # a Ctrl-C in the test runner does not reach it
        )
    return cls(label=label, args=command, process=process, log_dir=log_dir, **extra)


# -- server ---------------------------------------------------------------------------------


def start_server(
    home: Path,
    env: Mapping[str, str] | None = None,
    *,
    args: Sequence[str] = (),
    port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> ServerProcess:
    """`roost server --home HOME --bind 127.0.0.1:PORT [ARGS]`, ready to answer.

    The admin password is ``env["ROOST_ADMIN_PASSWORD"]`` or a random one (set in the
    server's environment, so it works on a restart with the same home too). Long polls last
    at most ``SERVER_POLL_WAIT`` seconds unless ``env`` sets ``ROOST_POLL_WAIT_SECONDS``.
    """
    settings = dict(env or {})
    settings.setdefault("ROOST_ADMIN_PASSWORD", secrets.token_urlsafe(12))
    # An agent's long poll keeps the server from stopping until it ends, even once the agent
    # is gone (dispatch.long_poll ignores disconnects and shutdown): keep polls short.
    settings.setdefault("ROOST_POLL_WAIT_SECONDS", str(SERVER_POLL_WAIT))
    attempts = 1 if port is not None else 3  # a free port may be taken before the server binds
    for attempt in range(attempts):
        try:
            return _start_server_once(home, settings, args, port or free_port(), timeout)
        except ProcessError as exc:
            if attempt + 1 == attempts or "address already in use" not in str(exc).lower():
                raise
    raise AssertionError("unreachable")


def _start_server_once(
    home: Path, env: dict[str, str], args: Sequence[str], port: int, timeout: float
) -> ServerProcess:
    command = ["server", "--home", str(home), "--bind", f"127.0.0.1:{port}", *args]
    log_dir = home.parent / f"{home.name}-logs"
    server = _launch(ServerProcess, f"server-{port}", command, env, log_dir, home=home)
    try:
        server.wait_for_output(r"Uvicorn running on", timeout)
        text = server.stdout()
        server.url = _match(_LISTENING, text, server)
        found = _FINGERPRINT.search(text)
        server.fingerprint = found.group(1) if found else None
        printed = _PASSWORD.search(text)
        server.admin_password = printed.group(1) if printed else env["ROOST_ADMIN_PASSWORD"]
        wait_until(
            lambda: _accepts(port), timeout, f"port {port} to accept", describe=server.describe
        )
    except BaseException:
        server.kill()
        raise
    return server


def _match(pattern: re.Pattern[str], text: str, proc: RoostProcess) -> str:
    found = pattern.search(text)
    if found is None:
        raise ProcessError(f"{proc.label} did not print {pattern.pattern!r}\n{proc.describe()}")
    return found.group(1)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- agent ----------------------------------------------------------------------------------


def start_agent(
    home: Path,
    server: ServerProcess,
    token: str | None,
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
    command_prefix: Sequence[str] = (),
) -> AgentProcess:
    """`roost agent enroll` (pinning the server's fingerprint), then `roost agent run`, and
    wait until the agent reports it is connected. ``name`` defaults to the home's name.

    ``token=None`` skips the enrollment: a new process for an already enrolled home (the
    same credentials; e.g. after ``kill()``). ``command_prefix`` goes before ``roost`` in both
    commands, e.g. ``["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]`` to run
    the agent as another user (its home must then belong to that user)."""
    agent_name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", home.name).strip("-._") or "agent"
    if token is not None:
        enroll_agent(
            home, server, token, agent_name, env=env, timeout=timeout, command_prefix=command_prefix
        )
    log_dir = home.parent / f"{home.name}-logs"
    command = ["agent", "run", "--home", str(home)]
    agent = _launch(
        AgentProcess,
        f"agent-{agent_name}",
        command,
        env or {},
        log_dir,
        prefix=command_prefix,
        home=home,
        name=agent_name,
    )
    try:
        agent.wait_for_output(r"INFO connected", timeout)
    except BaseException:
        agent.kill()
        raise
    return agent


def enroll_agent(
    home: Path,
    server: ServerProcess,
    token: str,
    name: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
    command_prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """`roost agent enroll` only (an enrolled agent that never runs stays offline)."""
    assert ROOST is not None
    command = [*command_prefix, ROOST, "agent", "enroll", "--server", server.url]
    command += ["--token", token]
    command += ["--home", str(home), "--name", name]
    if server.fingerprint is not None:
        command += ["--fingerprint", server.fingerprint]
    try:
        done = subprocess.run(
            command,
            env=base_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProcessError(f"`{' '.join(command)}` did not finish in {timeout:g} s") from exc
    if done.returncode != 0:
        raise ProcessError(
            f"`{' '.join(command)}` exited {done.returncode}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
    return done


# -- roost ctl ------------------------------------------------------------------------------


class Ctl(Roost):
    """Runs `roost ctl ARGS` against one server: ``ctl("agents")``, ``ctl.json("agents")``."""

    def __call__(self, *args: str | Path, **kwargs: Any) -> Result:
        return super().__call__("ctl", *args, **kwargs)


def ctl_runner(server: ServerProcess, config: Path, **env: str) -> Ctl:
    """`roost ctl` with the server's URL, fingerprint and admin password in the environment
    and its config file (token cache) at ``config``; ``unset=(...)`` drops any of them."""
    values = {**server.ctl_env(), "ROOST_CTL_CONFIG": str(config), **env}
    return Ctl(config.parent / "no-repository", **values)

"""The agent's home directory and its credentials file, ``agent.json``.

Layout of the home (default ``./roost-agent``, or ``--home``)::

    agent.json          mode 0600: server URL, agent id, secret, pinned fingerprint, name
    throughput.json     measured backup throughput, for estimates (see throughput.py)
    snapshots/          state of the snapshot providers (what to delete after a crash)

``agent.json`` (version 1)::

    {"version": 1, "server_url": "https://backup.example:8443", "agent_id": "...",
     "secret": "...", "fingerprint": "AB:CD:...", "name": "fileserver-1", "organisation": "..."}

The secret is the only copy of the agent's credential (the server keeps its SHA-256), so the
file is written atomically with mode 0600 inside a 0700 directory.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from roost.agent.errors import AgentAlreadyRunning, AgentError, NotEnrolled

CONFIG_VERSION = 1
CONFIG_NAME = "agent.json"
DEFAULT_HOME = Path("roost-agent")


@dataclass(frozen=True)
class AgentConfig:
    server_url: str
    agent_id: str
    secret: str
    fingerprint: str | None  # None only for http:// loopback servers (development)
    name: str
    organisation: str = ""

    @property
    def authorization(self) -> str:
        return f"Bearer {self.agent_id}.{self.secret}"


def resolve_home(home: Path | None) -> Path:
    return (home or DEFAULT_HOME).absolute()


def config_path(home: Path) -> Path:
    return home / CONFIG_NAME


def load_config(home: Path) -> AgentConfig:
    path = config_path(home)
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotEnrolled(
            f"this agent is not enrolled ({path} does not exist): run "
            "`roost agent enroll --server URL --token TOKEN` first"
        ) from None
    except (OSError, ValueError) as exc:
        raise AgentError(f"cannot read {path}: {exc}; enroll the agent again") from exc
    if doc.get("version") != CONFIG_VERSION:
        raise AgentError(f"{path} has version {doc.get('version')!r}; upgrade Roost")
    try:
        return AgentConfig(
            server_url=str(doc["server_url"]),
            agent_id=str(doc["agent_id"]),
            secret=str(doc["secret"]),
            fingerprint=None if doc.get("fingerprint") is None else str(doc["fingerprint"]),
            name=str(doc["name"]),
            organisation=str(doc.get("organisation", "")),
        )
    except KeyError as exc:
        raise AgentError(f"{path} lacks {exc}; enroll the agent again") from None


def save_config(home: Path, config: AgentConfig) -> Path:
    """Write agent.json atomically; it is never readable by other users, even briefly."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = config_path(home)
    text = json.dumps({"version": CONFIG_VERSION, **asdict(config)}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-agent-", dir=home)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def single_instance(home: Path) -> Iterator[None]:
    """Hold an exclusive lock on the agent home while the agent runs.

    Two agents with one identity would both poll; a job handed to one that then stops is
    aborted as lost. The lock goes with the process, so a crash never leaves it behind.
    """
    fd = os.open(home / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            _lock(fd)
        except OSError:
            raise AgentAlreadyRunning(
                f"another `roost agent run` is using {home}; stop it first (one agent per home)"
            ) from None
        yield
    finally:
        os.close(fd)


def _lock(fd: int) -> None:
    """Non-blocking exclusive lock: flock on POSIX, msvcrt.locking on Windows."""
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

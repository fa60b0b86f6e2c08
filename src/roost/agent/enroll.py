"""Enrollment: a one-time token from the admin becomes this agent's own credentials.

The agent connects (pinning the certificate fingerprint given by the admin, or trusting the
one it sees on first use and reporting it), sends the token with its name, and receives an
agent id and a random secret. The server keeps only the secret's SHA-256; the agent keeps the
secret in ``agent.json`` (mode 0600) together with the pinned fingerprint.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roost import __version__
from roost.agent.api import ServerApi
from roost.agent.config import AgentConfig, config_path, save_config
from roost.agent.errors import AlreadyEnrolled
from roost.agent.platform import Platform, current_platform
from roost.agent.transport import Connection, connect, normalise_fingerprint
from roost.errors import UsageError
from roost.protocol.agent_api import EnrollRequest

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

Connector = Callable[[str, str | None], Connection]


@dataclass(frozen=True)
class Enrollment:
    config: AgentConfig
    path: Path  # where agent.json was written
    trusted_on_first_use: bool  # no fingerprint was given: the one seen was pinned


def default_name(hostname: str) -> str:
    """The hostname made a valid agent name (``srv 01.example`` -> ``srv-01``)."""
    short = hostname.split(".")[0] if not hostname.replace(".", "").isdigit() else hostname
    ascii_only = unicodedata.normalize("NFKD", short).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_only).strip("-._")
    return cleaned[:100] or "agent"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"invalid agent name {name!r}: use up to 100 letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def enroll(
    server_url: str,
    token: str,
    name: str,
    fingerprint: str | None,
    home: Path,
    *,
    force: bool = False,
    platform: Platform | None = None,
    connector: Connector = connect,
) -> Enrollment:
    platform = platform or current_platform()
    check_name(name)
    token = token.strip()
    if not 8 <= len(token) <= 200:
        raise UsageError("the enrollment token is malformed: copy it whole, as the server gave it")
    if config_path(home).exists() and not force:
        raise AlreadyEnrolled(
            f"{config_path(home)} already holds an enrollment; use another --home, or --force "
            "to replace it"
        )
    pinned = normalise_fingerprint(fingerprint) if fingerprint else None
    connection = connector(server_url, pinned)
    request = EnrollRequest(
        token=token,
        name=name,
        hostname=platform.hostname[:255],
        os=platform.os_name[:100],
        version=__version__,
    )
    with connection.client:
        answer = ServerApi(connection.client).enroll(request)
    config = AgentConfig(
        server_url=connection.address.url,
        agent_id=answer.agent_id,
        secret=answer.secret,
        fingerprint=connection.fingerprint,
        name=name,
        organisation=answer.organisation,
    )
    path = save_config(home, config)
    return Enrollment(config, path, pinned is None and connection.fingerprint is not None)

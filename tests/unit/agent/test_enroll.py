"""Enrollment against a real local TLS server, and the agent.json it leaves behind."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from tests.unit.agent.fake_server import AGENT_ID, SECRET, TOKEN
from tests.unit.agent.tls_server import TlsServer

from roost import __version__
from roost.agent.config import AgentConfig, load_config, save_config
from roost.agent.enroll import default_name, enroll
from roost.agent.errors import AlreadyEnrolled, FingerprintMismatch, NotEnrolled, ServerRefused
from roost.agent.platform import fake_platform
from roost.errors import UsageError

PLATFORM = fake_platform(hostname="fileserver-1.example", os_name="Linux 6.1 (x86_64)")


def test_enroll_with_the_fingerprint_stores_credentials_privately(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    home = tmp_path / "agent"
    done = enroll(
        tls_server.url, TOKEN, "fs-1", tls_server.cert.fingerprint, home, platform=PLATFORM
    )
    assert not done.trusted_on_first_use
    assert done.path == home / "agent.json"
    assert stat.S_IMODE(done.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert json.loads(done.path.read_text()) == {
        "version": 1,
        "server_url": tls_server.url,
        "agent_id": AGENT_ID,
        "secret": SECRET,
        "fingerprint": tls_server.cert.fingerprint,
        "name": "fs-1",
        "organisation": "default",
    }
    assert tls_server.enrolled == [
        {
            "token": TOKEN,
            "name": "fs-1",
            "hostname": "fileserver-1.example",
            "os": "Linux 6.1 (x86_64)",
            "version": __version__,
        }
    ]
    assert load_config(home) == done.config


def test_enroll_without_a_fingerprint_pins_the_one_seen(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    done = enroll(tls_server.url, TOKEN, "fs-1", None, tmp_path, platform=PLATFORM)
    assert done.trusted_on_first_use
    assert done.config.fingerprint == tls_server.cert.fingerprint


def test_wrong_fingerprint_writes_nothing(tls_server: TlsServer, tmp_path: Path) -> None:
    with pytest.raises(FingerprintMismatch):
        enroll(tls_server.url, TOKEN, "fs-1", "11" * 32, tmp_path, platform=PLATFORM)
    assert tls_server.enrolled == []
    assert not (tmp_path / "agent.json").exists()


def test_invalid_token_shows_the_servers_detail(tls_server: TlsServer, tmp_path: Path) -> None:
    with pytest.raises(ServerRefused) as err:
        enroll(tls_server.url, "wrong-token", "fs-1", None, tmp_path, platform=PLATFORM)
    assert str(err.value) == (
        "the server refused the enrollment (HTTP 401): the enrollment token is invalid, "
        "expired or used up"
    )
    assert not (tmp_path / "agent.json").exists()


def test_an_existing_enrollment_is_kept_unless_forced(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    save_config(tmp_path, AgentConfig("https://old:1", "old-id", "old", None, "old"))
    with pytest.raises(AlreadyEnrolled, match="already holds an enrollment"):
        enroll(tls_server.url, TOKEN, "fs-1", None, tmp_path, platform=PLATFORM)
    assert load_config(tmp_path).agent_id == "old-id"
    enroll(tls_server.url, TOKEN, "fs-1", None, tmp_path, platform=PLATFORM, force=True)
    assert load_config(tmp_path).agent_id == AGENT_ID


@pytest.mark.parametrize("name", ["", "-lead", "has space", "a/b", "x" * 101])
def test_invalid_names_are_refused_before_connecting(name: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="invalid agent name"):
        enroll("https://unreachable.invalid", TOKEN, name, None, tmp_path, platform=PLATFORM)


@pytest.mark.parametrize("token", ["short", "x" * 201])
def test_malformed_tokens_are_refused_before_connecting(token: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="the enrollment token is malformed"):
        enroll("https://unreachable.invalid", token, "fs-1", None, tmp_path, platform=PLATFORM)


@pytest.mark.parametrize(
    ("hostname", "name"),
    [
        ("fileserver-1.example.com", "fileserver-1"),
        ("FS_2", "FS_2"),
        ("srv 01", "srv-01"),
        ("10.0.0.5", "10.0.0.5"),
        ("ñandú", "nandu"),
        ("---", "agent"),
    ],
)
def test_default_name_from_hostname(hostname: str, name: str) -> None:
    assert default_name(hostname) == name


def test_missing_config_says_how_to_enroll(tmp_path: Path) -> None:
    with pytest.raises(NotEnrolled) as err:
        load_config(tmp_path)
    assert str(err.value) == (
        f"this agent is not enrolled ({tmp_path}/agent.json does not exist): run "
        "`roost agent enroll --server URL --token TOKEN` first"
    )


def test_damaged_config_is_reported(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text('{"version": 1, "server_url": "x"}')
    with pytest.raises(Exception, match="lacks 'agent_id'; enroll the agent again"):
        load_config(tmp_path)

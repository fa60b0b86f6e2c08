"""`roost agent enroll` and `roost agent run` as real processes: output, errors, exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tests.helpers.cli import ROOST
from tests.unit.agent.fake_server import AGENT_ID, TOKEN
from tests.unit.agent.tls_server import TlsServer


def roost(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    assert ROOST is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    return subprocess.run(
        [ROOST, "agent", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env={**env, "ROOST_KDF_PROFILE": "test"},
        timeout=60,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_enroll_with_fingerprint(tls_server: TlsServer, tmp_path: Path) -> None:
    home = tmp_path / "agent"
    fp = tls_server.cert.fingerprint
    done = roost(
        "enroll",
        "--server",
        tls_server.url,
        "--token",
        TOKEN,
        "--fingerprint",
        fp,
        "--name",
        "fs-1",
        home=home,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"enrolled as fs-1 (agent id {AGENT_ID}) with {tls_server.url}",
        f"server certificate matches the pinned fingerprint {fp}",
        f"credentials saved in {home}/agent.json; start the agent with "
        f"`roost agent run --home {home}`",
    ]
    assert json.loads((home / "agent.json").read_text())["fingerprint"] == fp


def test_enroll_trusting_on_first_use_warns(tls_server: TlsServer, tmp_path: Path) -> None:
    done = roost("enroll", "--server", tls_server.url, "--token", TOKEN, home=tmp_path)
    assert done.returncode == 0
    assert f"pinned the certificate seen now: {tls_server.cert.fingerprint}" in done.stderr


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        (
            "fingerprint",
            23,
            "roost: error: the server's certificate fingerprint {fp} does not match the "
            "pinned {wrong}: {url} may not be your Roost server (or someone is intercepting "
            "the connection); if the server's certificate was replaced on purpose, enroll "
            "this agent again",
        ),
        (
            "token",
            24,
            "roost: error: the server refused the enrollment (HTTP 401): the enrollment token "
            "is invalid, expired or used up",
        ),
        (
            "unreachable",
            22,
            "roost: error: cannot reach the server at https://127.0.0.1:{port}: connection "
            "refused; check the URL and that the server is running",
        ),
        (
            "http",
            2,
            "roost: error: refusing plain http:// to backup.example: agent traffic carries "
            "the repository key, so use https:// (http:// is only for a server on this machine)",
        ),
    ],
)
def test_enroll_errors_are_one_line(
    tls_server: TlsServer, tmp_path: Path, case: str, code: int, message: str
) -> None:
    wrong = ":".join(["AA"] * 32)
    port = closed_port()
    server, token, fingerprint = tls_server.url, TOKEN, tls_server.cert.fingerprint
    if case == "fingerprint":
        fingerprint = wrong
    elif case == "token":
        token = "not-the-token"
    elif case == "unreachable":
        server = f"https://127.0.0.1:{port}"
    elif case == "http":
        server = "http://backup.example"
    done = roost(
        "enroll", "--server", server, "--token", token, "--fingerprint", fingerprint, home=tmp_path
    )
    expected = message.format(
        fp=tls_server.cert.fingerprint, wrong=wrong, url=tls_server.url, port=port
    )
    assert (done.returncode, done.stderr, done.stdout) == (code, expected + "\n", "")
    assert not (tmp_path / "agent.json").exists()


def test_run_without_enrollment(tmp_path: Path) -> None:
    done = roost("run", home=tmp_path)
    assert done.returncode == 21
    assert done.stderr == (
        f"roost: error: this agent is not enrolled ({tmp_path}/agent.json does not exist): "
        "run `roost agent enroll --server URL --token TOKEN` first\n"
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_run_retries_an_unreachable_server_and_stops_cleanly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    config = {
        "version": 1,
        "server_url": f"http://127.0.0.1:{closed_port()}",
        "agent_id": "a",
        "secret": "s",
        "fingerprint": None,
        "name": "fs-1",
    }
    (tmp_path / "agent.json").write_text(json.dumps(config))
    assert ROOST is not None
    proc = subprocess.Popen(
        [ROOST, "agent", "run", "--home", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background of a non-interactive shell ignores SIGINT,
        # and so would the agent: Ctrl-C as a user's terminal sends it
        preexec_fn=_default_sigint,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("retrying with backoff" in x for x in lines):
            lines.append(proc.stderr.readline())
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # failed: no agent left running after the test
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, rest
    log = "".join(lines) + rest
    assert log.count("retrying with backoff") == 1  # logged once, not at every attempt
    assert log.rstrip().endswith("agent stopped")

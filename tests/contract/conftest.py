"""Backends under contract test, including S3 against a real moto server process.

The moto server is started once per session on a free loopback port. When it cannot be
started the s3 cases are skipped with the reason, never passed silently.
"""

from __future__ import annotations

import http.client
import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from tests.helpers.require import skip_unless_required

from roost.storage.s3 import S3Backend, make_client

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

BUCKET = "roost-contract"
ACCESS_KEY = "testing-key-id"
SECRET_KEY = "testing-secret-key"
STARTUP_TIMEOUT = 20.0


@dataclass
class MotoServer:
    endpoint: str | None
    client: S3Client | None = None
    skip_reason: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


def _wait_until_up(proc: subprocess.Popen[bytes], port: int) -> str:
    """'' once the server answers, else why it did not."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"moto server exited with status {proc.returncode}"
        if _answers(port):
            return ""
        time.sleep(0.1)
    return f"moto server did not answer within {STARTUP_TIMEOUT:.0f}s"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    try:
        import moto.server  # noqa: F401  (only checks that it is installed)
    except ImportError as exc:
        yield MotoServer(None, None, f"moto[server] is not installed: {exc}")
        return
    port = _free_port()
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    except OSError as exc:
        yield MotoServer(None, None, f"cannot start {' '.join(command)}: {exc}")
        return
    try:
        reason = _wait_until_up(proc, port)
        if reason:
            tail = log_path.read_text(errors="replace")[-500:]
            yield MotoServer(None, None, f"{reason}; log: {tail}")
            return
        endpoint = f"http://127.0.0.1:{port}"
        client = make_client(endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY)
        client.create_bucket(Bucket=BUCKET)
        yield MotoServer(endpoint, client)
    finally:
        _stop(proc)


_prefix_counter = itertools.count()


@pytest.fixture
def make_s3(request: pytest.FixtureRequest) -> Callable[..., S3Backend]:
    """Factory of S3 backends on the shared bucket, each under a prefix of its own.

    Skips the calling test, with the reason, when the moto server is not available.
    """

    def make(*, conditional_put: bool = True) -> S3Backend:
        moto: MotoServer = request.getfixturevalue("moto_server")
        if moto.endpoint is None or moto.client is None:
            skip_unless_required("s3", f"s3 backend not tested: {moto.skip_reason}")
        return S3Backend(
            BUCKET,
            prefix=f"test-{next(_prefix_counter)}/repo",
            endpoint_url=moto.endpoint,
            conditional_put=conditional_put,
            client=moto.client,  # shared: building a client costs ~0.2 s
        )

    return make


@pytest.fixture
def s3_location(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An s3:// repository URL on the moto server, with credentials in the environment."""
    if moto_server.endpoint is None:
        skip_unless_required("s3", f"s3 backend not tested: {moto_server.skip_reason}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    prefix = f"url-{next(_prefix_counter)}"
    return f"s3://{BUCKET}/{prefix}?endpoint={moto_server.endpoint}&region=us-east-1"

"""A real PostgreSQL for tests: ROOST_TEST_POSTGRES_URL, or a throwaway cluster started here.

The throwaway cluster uses the system's binaries (/usr/lib/postgresql/*/bin), runs as the
`postgres` user when the tests run as root (PostgreSQL refuses to run as root), lives in a
temp directory, listens on a free loopback port, and is stopped at the end of the session.
Each test gets its own fresh database. Without PostgreSQL the tests skip, saying why.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.helpers.require import skip_unless_required

URL_ENV = "ROOST_TEST_POSTGRES_URL"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class Cluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="roost-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "roost", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        atexit.register(self.stop)  # also on an interrupted session (Ctrl-C skips teardown)
        return f"postgresql+psycopg://roost@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if not self.root.exists():
            return  # stopped already
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _start_cluster() -> tuple[str | None, Cluster | None, str]:
    url = os.environ.get(URL_ENV)
    if url:
        return url, None, ""
    bindir = _binaries()
    if bindir is None:
        return None, None, f"no PostgreSQL: set {URL_ENV} or install postgresql"
    cluster = Cluster(bindir)
    try:
        return cluster.start(), cluster, ""
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return None, None, f"cannot start a PostgreSQL cluster: {exc} {detail.decode()[-300:]}"


def _admin_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def postgres_url_fixture() -> Callable[..., Any]:
    """A session fixture: a function that creates a fresh database and returns its URL."""

    @pytest.fixture(scope="session")
    def postgres_server() -> Iterator[Callable[[], str]]:
        url, cluster, why = _start_cluster()
        if url is None:
            skip_unless_required("postgres", why)
        created: list[str] = []

        def new_database() -> str:
            name = f"roost_test_{secrets.token_hex(6)}"
            with psycopg.connect(_admin_url(url), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            created.append(name)
            return url.rsplit("/", 1)[0] + "/" + name

        yield new_database
        if cluster is not None:
            cluster.stop()
            return
        with psycopg.connect(_admin_url(url), autocommit=True) as conn:
            for name in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return postgres_server

"""Fixtures of the workflow tests: one real `roost server` per module (short timings, see
support.py), an admin API client, and per test a ``fleet`` of agent processes that is always
stopped in teardown, also when the test fails."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.api_client import AdminClient
from tests.helpers.processes import ServerProcess, start_server
from tests.integration.workflow.support import SERVER_ENV, Fleet


@pytest.fixture(scope="module")
def server_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's --home: its catalog, TLS files and local storage (``storage/``)."""
    return tmp_path_factory.mktemp("workflow-server") / "home"


@pytest.fixture(scope="module")
def server(server_home: Path) -> Iterator[ServerProcess]:
    process = start_server(server_home, dict(SERVER_ENV))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[AdminClient]:
    client = AdminClient.login(server.url, server.admin_password, fingerprint=server.fingerprint)
    try:
        yield client
    finally:
        client.close()


def _prefix(request: pytest.FixtureRequest) -> str:
    """A name unique to this test in the shared organisation (names allow [A-Za-z0-9._-])."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name.removeprefix("test_"))[:40].strip("-")
    return f"{base}-{os.urandom(2).hex()}"


@pytest.fixture
def fleet(
    server: ServerProcess, admin: AdminClient, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    crew = Fleet(server, admin, tmp_path, _prefix(request))
    try:
        yield crew
    finally:
        crew.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any]:
    """Every failing test shows its processes' stderr tails, whichever assert failed."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    crew = getattr(item, "funcargs", {}).get("fleet")
    if report.when == "call" and report.failed and isinstance(crew, Fleet):
        report.sections.append(("roost processes: stderr tails", crew.diagnose()))


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is under a 0700 directory),
    for agents that run as an unprivileged user."""
    path = Path(tempfile.mkdtemp(prefix="roost-workflow-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

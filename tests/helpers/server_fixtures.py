"""Fixtures for server tests: a ready server on a temp SQLite catalog, and PostgreSQL.

Imported by the conftest.py of tests/unit/server and tests/integration/server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers.postgres import postgres_url_fixture
from tests.helpers.server import ADMIN_PASSWORD, Harness, make_settings, running_server

postgres_server = postgres_url_fixture()


def _server_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("ROOST_KDF_PROFILE", "test")
    monkeypatch.delenv("ROOST_SERVER_MASTER_KEY", raising=False)


@pytest.fixture(autouse=True)
def _admin_password(monkeypatch: pytest.MonkeyPatch) -> None:
    _server_environment(monkeypatch)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Harness]:
    with running_server(make_settings(tmp_path / "home")) as harness:
        yield harness


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One server for a module whose tests change nothing (e.g. only invalid requests)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _server_environment(monkeypatch)
        home = tmp_path_factory.mktemp("server") / "home"
        with running_server(make_settings(home)) as harness:
            harness.enroll("fs1")
            yield harness

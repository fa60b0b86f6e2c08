"""Fixtures: real local TLS servers (see tls_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.agent.tls_server import TlsServer, TlsServers


@pytest.fixture
def tls_servers(tmp_path: Path) -> Iterator[TlsServers]:
    servers = TlsServers(tmp_path / "tls")
    servers.directory.mkdir()
    yield servers
    servers.close()


@pytest.fixture
def tls_server(tls_servers: TlsServers) -> TlsServer:
    return tls_servers.start()

"""`run_server` refuses unsafe setups before it touches anything and says how to connect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import uvicorn
from tests.helpers.server import FakeClock, make_settings

from roost.errors import UsageError
from roost.server.app import prepare_state
from roost.server.main import (
    HTTP_PARSER,
    INSECURE_REMOTE,
    banner,
    event_loop,
    prepare_tls,
    run_server,
)


def test_insecure_http_needs_a_loopback_bind(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", bind="0.0.0.0:8443", insecure_http=True)
    with pytest.raises(UsageError) as caught:
        run_server(settings)
    assert str(caught.value) == INSECURE_REMOTE
    assert not (tmp_path / "home").exists()
    for bind in ("127.0.0.1:8080", "[::1]:8080", "localhost:80"):
        ok = make_settings(tmp_path / "home", bind=bind, insecure_http=True)
        assert prepare_tls(ok) is None


def test_tls_by_default_with_a_fingerprint(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", insecure_http=False, bind="0.0.0.0:9443")
    fingerprint = prepare_tls(settings)
    assert fingerprint is not None and settings.cert_path.exists()
    state = prepare_state(settings, FakeClock())
    text = banner(settings, state, fingerprint)
    assert f"TLS certificate fingerprint (SHA-256): {fingerprint}" in text
    assert ":9443/" in text and text.startswith("Roost server listening on https://")
    state.db.dispose()


def test_only_one_of_cert_and_key_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", insecure_http=False, tls_cert=tmp_path / "c.pem")
    with pytest.raises(UsageError, match="give both --tls-cert and --tls-key"):
        prepare_tls(settings)


def test_bad_bind_is_explained(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", bind="localhost")
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        _ = settings.host_port


def test_cli_command_passes_its_options_to_the_server(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from roost.cli import server_cmd

    app = typer.Typer()
    server_cmd.register(app)
    home = tmp_path / "cli-home"
    args = ["--home", str(home), "--bind", "0.0.0.0:9000", "--insecure-http"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == INSECURE_REMOTE
    assert not home.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop has no Windows build")
def test_the_server_serves_with_uvloop_and_the_httptools_parser() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    assert event_loop() == "uvloop"
    config = uvicorn.Config(app, loop=event_loop(), http=HTTP_PARSER)
    config.load()
    protocol = config.http_protocol_class
    assert f"{protocol.__module__}.{protocol.__name__}" == (
        "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol"
    )

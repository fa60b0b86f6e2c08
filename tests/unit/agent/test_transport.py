"""Certificate pinning against real local TLS servers; URL rules; fingerprint formats."""

from __future__ import annotations

import socket

import httpx
import pytest
from tests.unit.agent.tls_server import TlsServer, TlsServers, make_cert

from roost.agent.errors import FingerprintMismatch, InsecureServerUrl, ServerUnreachable
from roost.agent.transport import (
    connect,
    fetch_certificate,
    fingerprint_of,
    normalise_fingerprint,
    parse_server_url,
    pinned_context,
)
from roost.errors import UsageError

WRONG = ":".join(["00"] * 32)


def test_fingerprint_is_sha256_of_the_der_certificate(tls_server: TlsServer) -> None:
    der = fetch_certificate(parse_server_url(tls_server.url))
    assert der == tls_server.cert.der
    assert fingerprint_of(der) == tls_server.cert.fingerprint
    assert len(fingerprint_of(der)) == 32 * 3 - 1


def test_matching_pin_connects(tls_server: TlsServer) -> None:
    connection = connect(tls_server.url, tls_server.cert.fingerprint)
    with connection.client as client:
        response = client.get("/ping")
    assert response.status_code == 200
    assert response.json() == {"path": "/api/v1/agent/ping"}
    assert connection.fingerprint == tls_server.cert.fingerprint


def test_pin_in_another_spelling_connects(tls_server: TlsServer) -> None:
    plain = tls_server.cert.fingerprint.replace(":", "").lower()
    connection = connect(tls_server.url, plain)
    with connection.client as client:
        assert client.get("/x").status_code == 200


def test_mismatched_pin_is_refused_with_both_fingerprints(tls_server: TlsServer) -> None:
    with pytest.raises(FingerprintMismatch) as err:
        connect(tls_server.url, WRONG)
    assert str(err.value) == (
        f"the server's certificate fingerprint {tls_server.cert.fingerprint} does not match "
        f"the pinned {WRONG}: https://127.0.0.1:{tls_server.port} may not be your Roost "
        "server (or someone is intercepting the connection); if the server's certificate "
        "was replaced on purpose, enroll this agent again"
    )


def test_without_a_pin_the_certificate_seen_is_reported(tls_server: TlsServer) -> None:
    connection = connect(tls_server.url, None)
    with connection.client as client:
        assert client.get("/x").status_code == 200
    assert connection.fingerprint == tls_server.cert.fingerprint


def test_pinned_context_trusts_no_other_certificate(
    tls_servers: TlsServers,
) -> None:
    # The check at connect time is not all: every handshake must present the pinned
    # certificate, so a server swapped in after the fingerprint check is refused too.
    first = tls_servers.start()
    impostor = tls_servers.start()
    with (
        httpx.Client(verify=pinned_context(first.cert.der)) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get(impostor.url)


def test_a_ca_issued_leaf_can_be_pinned(tls_servers: TlsServers) -> None:
    ca_cert, ca, ca_key = make_cert("roost-test-ca", ca=True)
    leaf, _, _ = make_cert("backup.example", issuer=(ca, ca_key))
    server = tls_servers.start(leaf, chain=ca_cert.cert_pem)
    connection = connect(server.url, leaf.fingerprint)
    with connection.client as client:
        assert client.get("/x").status_code == 200


def test_unreachable_server_says_so() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before anyone connects
    with pytest.raises(ServerUnreachable) as err:
        connect(f"https://127.0.0.1:{port}", WRONG)
    assert str(err.value) == (
        f"cannot reach the server at https://127.0.0.1:{port}: connection refused; "
        "check the URL and that the server is running"
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]
)
def test_plain_http_is_allowed_to_loopback(url: str) -> None:
    connection = connect(url, None)
    assert connection.fingerprint is None
    assert str(connection.client.base_url) == url + "/api/v1/agent/"


def test_plain_http_elsewhere_is_refused() -> None:
    with pytest.raises(InsecureServerUrl) as err:
        parse_server_url("http://backup.example:8080")
    assert str(err.value) == (
        "refusing plain http:// to backup.example: agent traffic carries the repository key, "
        "so use https:// (http:// is only for a server on this machine)"
    )


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://backup.example", "https://backup.example:443"),
        ("https://backup.example:8443/", "https://backup.example:8443"),
        ("https://10.0.0.5:8443/roost", "https://10.0.0.5:8443/roost"),
    ],
)
def test_server_urls_are_normalised(url: str, normal: str) -> None:
    assert parse_server_url(url).url == normal


@pytest.mark.parametrize("url", ["ftp://x", "backup.example", "https://"])
def test_bad_server_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError, match="server URL"):
        parse_server_url(url)


@pytest.mark.parametrize(
    "text",
    [
        "AB:" * 31 + "AB",
        "ab" * 32,
        "sha256:" + "ab" * 32,
        " ".join(["ab"] * 32),
    ],
)
def test_fingerprint_spellings(text: str) -> None:
    assert normalise_fingerprint(text) == "AB:" * 31 + "AB"


@pytest.mark.parametrize("text", ["", "AB:CD", "zz" * 32, "ab" * 33])
def test_bad_fingerprints_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="invalid fingerprint"):
        normalise_fingerprint(text)

"""A real local HTTPS server with a certificate made on the spot (pinning, enrollment).

It answers GET with the path it was asked for and implements ``POST /api/v1/agent/enroll``
with the fake server's token and credentials."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.unit.agent.fake_server import AGENT_ID, SECRET, TOKEN


@dataclass
class Cert:
    der: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        digest = x509.load_der_x509_certificate(self.der).fingerprint(hashes.SHA256())
        return ":".join(f"{b:02X}" for b in digest)


def make_cert(
    common_name: str = "roost-test-server",
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
) -> tuple[Cert, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    cert = builder.sign(signing_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return Cert(der, cert.public_bytes(serialization.Encoding.PEM), key_pem), cert, key


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return  # keep test output clean

    def _answer(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200, {"path": self.path})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/api/v1/agent/enroll":
            self._answer(404, {"detail": "no such route"})
        elif request.get("token") != TOKEN:
            self._answer(401, {"detail": "the enrollment token is invalid, expired or used up"})
        else:
            self.server.enrolled.append(request)  # type: ignore[attr-defined]
            answer = {"agent_id": AGENT_ID, "secret": SECRET, "organisation": "default"}
            self._answer(200, answer)


@dataclass
class TlsServer:
    url: str
    port: int
    cert: Cert
    enrolled: list[dict[str, object]]


class TlsServers:
    """Starts HTTPS servers in threads; ``close()`` stops them all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._servers: list[ThreadingHTTPServer] = []

    def start(self, cert: Cert | None = None, chain: bytes = b"") -> TlsServer:
        cert = cert or make_cert()[0]
        n = len(self._servers)
        certfile, keyfile = self.directory / f"cert-{n}.pem", self.directory / f"key-{n}.pem"
        certfile.write_bytes(cert.cert_pem + chain)
        keyfile.write_bytes(cert.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        enrolled: list[dict[str, object]] = []
        httpd.enrolled = enrolled  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self._servers.append(httpd)
        port = httpd.server_address[1]
        return TlsServer(f"https://127.0.0.1:{port}", port, cert, enrolled)

    def close(self) -> None:
        for httpd in self._servers:
            httpd.shutdown()
            httpd.server_close()

"""HTTPS to the server with a pinned certificate: the agent trusts exactly one certificate.

Agents enroll against servers that usually have a self-signed certificate, so there is no CA
to rely on. Instead the agent pins the SHA-256 fingerprint of the server's DER certificate
(shown by the server as ``AB:CD:...``): before each new client it fetches the certificate,
compares the fingerprint, and then builds an SSL context whose only trust anchor is that very
certificate. Hostname checks are off because the pin is stronger than a name: every TLS
handshake of the client must present a certificate chaining to the pinned one (the server's
own key), whatever name was used to reach it.

Without a pin (first enrollment, "trust on first use") the fingerprint seen is returned so the
caller can show and store it. Plain ``http://`` is allowed only to loopback addresses, for
development against ``roost server --insecure-http``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass

import httpx

from roost.agent.errors import FingerprintMismatch, InsecureServerUrl, ServerUnreachable
from roost.errors import UsageError

API_PREFIX = "/api/v1/agent"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_HEX = re.compile(r"[0-9A-Fa-f]{64}")


@dataclass(frozen=True)
class ServerAddress:
    url: str  # scheme://host:port[/path] without a trailing slash
    scheme: str
    host: str
    port: int

    @property
    def api_base(self) -> str:
        return self.url + API_PREFIX


@dataclass
class Connection:
    client: httpx.Client  # base_url is the agent API (".../api/v1/agent")
    address: ServerAddress
    fingerprint: str | None  # the verified (or, without a pin, first seen) fingerprint


def parse_server_url(url: str) -> ServerAddress:
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL as exc:
        raise UsageError(f"invalid server URL {url!r}: {exc}") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise UsageError(f"invalid server URL {url!r}: use https://HOST[:PORT]")
    if parsed.scheme == "http" and not is_loopback(parsed.host):
        raise InsecureServerUrl(
            f"refusing plain http:// to {parsed.host}: agent traffic carries the repository "
            "key, so use https:// (http:// is only for a server on this machine)"
        )
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    path = parsed.path.rstrip("/")
    return ServerAddress(f"{parsed.scheme}://{host}:{port}{path}", parsed.scheme, parsed.host, port)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- fingerprints ---------------------------------------------------------------------------


def fingerprint_of(der: bytes) -> str:
    """SHA-256 of the DER certificate as ``AB:CD:...`` (the server prints the same form)."""
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def normalise_fingerprint(text: str) -> str:
    """Accept ``AB:CD:..``, ``ab cd ..`` or plain hex, optionally prefixed ``sha256:``."""
    raw = text.strip().removeprefix("sha256:").removeprefix("SHA256:")
    digits = re.sub(r"[\s:]", "", raw)
    if not _HEX.fullmatch(digits):
        raise UsageError(
            f"invalid fingerprint {text!r}: expected the SHA-256 the server prints "
            "(64 hex digits, as AB:CD:...)"
        )
    upper = digits.upper()
    return ":".join(upper[i : i + 2] for i in range(0, 64, 2))


def check_pin(seen: str, pinned: str, url: str) -> None:
    if normalise_fingerprint(seen) != normalise_fingerprint(pinned):
        raise FingerprintMismatch(
            f"the server's certificate fingerprint {seen} does not match the pinned "
            f"{normalise_fingerprint(pinned)}: {url} may not be your Roost server (or someone "
            "is intercepting the connection); if the server's certificate was replaced on "
            "purpose, enroll this agent again"
        )


# -- TLS ------------------------------------------------------------------------------------


def fetch_certificate(address: ServerAddress, timeout: float = 15.0) -> bytes:
    """The server's leaf certificate (DER), fetched without trusting it yet."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # we only look at it; trust comes from the pin
    sni = None if _is_ip(address.host) else address.host
    try:
        with (
            socket.create_connection((address.host, address.port), timeout=timeout) as raw,
            probe.wrap_socket(raw, server_hostname=sni) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise ServerUnreachable(
            f"cannot reach the server at {address.url}: {_reason(exc)}; check the URL and "
            "that the server is running"
        ) from exc
    if not der:
        raise ServerUnreachable(f"the server at {address.url} presented no TLS certificate")
    return der


def pinned_context(der: bytes) -> ssl.SSLContext:
    """An SSL context that trusts exactly this certificate and nothing else."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # replaced by the pin, see the module docstring
    context.verify_mode = ssl.CERT_REQUIRED
    # The pinned leaf is the trust anchor even when a CA issued it (no chain to a root).
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=der)
    return context


def connect(
    server_url: str,
    fingerprint: str | None,
    *,
    authorization: str | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> Connection:
    """A client for the agent API; verifies the pin first (or reports what it saw: TOFU)."""
    address = parse_server_url(server_url)
    headers = {"Authorization": authorization} if authorization else {}
    if address.scheme == "http":
        client = httpx.Client(base_url=address.api_base, headers=headers, timeout=timeout)
        return Connection(client, address, None)
    der = fetch_certificate(address)
    seen = fingerprint_of(der)
    if fingerprint is not None:
        check_pin(seen, fingerprint, address.url)
    client = httpx.Client(
        base_url=address.api_base, headers=headers, timeout=timeout, verify=pinned_context(der)
    )
    return Connection(client, address, seen)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc) or type(exc).__name__

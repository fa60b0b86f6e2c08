"""Secrets on the server: password hashes, bearer tokens, the master key and the TLS certificate.

Stored formats:
    password hash   "scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>"  (parameters travel with the hash)
    token hash      SHA-256 hex of the token; tokens are random, so no salt or slow KDF is needed
    wrapped secret  b64 of a crypto object (see roost.engine.crypto) under the server master key,
                    with associated data naming the secret's purpose, so secrets cannot be swapped
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from roost.engine.crypto import Key, MasterKey
from roost.errors import CorruptObject, UsageError

MASTER_KEY_ENV = "ROOST_SERVER_MASTER_KEY"
MASTER_KEY_FILE = "server.key"
_SCRYPT_NORMAL = (2**15, 8, 1)
_SCRYPT_TEST = (2**4, 8, 1)  # ROOST_KDF_PROFILE=test: test suites only


# -- passwords ------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    n, r, p = _SCRYPT_TEST if os.environ.get("ROOST_KDF_PROFILE") == "test" else _SCRYPT_NORMAL
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        name, n, r, p, salt, digest = stored.split("$")
        if name != "scrypt":
            return False
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2**27, dklen=32)


# -- tokens -----------------------------------------------------------------------------------


def new_token(nbytes: int = 32) -> str:
    """A random url-safe token (never contains '.', which separates agent id and secret)."""
    return secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


# -- server master key and wrapped secrets -------------------------------------------------


def load_master_key(home: Path) -> bytes:
    """The server master key from the environment, else ``home/server.key`` (created 0600)."""
    env = os.environ.get(MASTER_KEY_ENV)
    if env:
        try:
            key = bytes.fromhex(env.strip())
        except ValueError:
            key = b""
        if len(key) != 32:
            raise UsageError(f"{MASTER_KEY_ENV} must be 64 hexadecimal characters (32 bytes)")
        return key
    path = home / MASTER_KEY_FILE
    if not path.exists():
        _write_private(path, secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) != 32:
        raise UsageError(
            f"{path} is damaged ({len(key)} bytes, expected 32); restore it from your backup "
            "of the server home"
        )
    return key


class SecretBox:
    """Wraps and unwraps catalog secrets with the server master key (AES-256-GCM)."""

    def __init__(self, master_key: bytes) -> None:
        self._key = Key(MasterKey(master_key, bytes(32), 1))

    def wrap(self, secret: str, purpose: str) -> str:
        sealed = self._key.encrypt(secret.encode(), _aad(purpose))
        return _b64(sealed)

    def unwrap(self, wrapped: str, purpose: str) -> str:
        try:
            sealed = base64.b64decode(wrapped, validate=True)
            return self._key.decrypt(sealed, _aad(purpose), purpose).decode()
        except (ValueError, CorruptObject) as exc:
            raise CorruptObject(
                f"cannot unwrap the {purpose}: the server master key ({MASTER_KEY_FILE} or "
                f"{MASTER_KEY_ENV}) is not the one this catalog was created with"
            ) from exc


def _aad(purpose: str) -> bytes:
    return b"roost-server-secret:" + purpose.encode()


# -- TLS --------------------------------------------------------------------------------------


def ensure_certificate(cert_path: Path, key_path: Path) -> str:
    """Create a self-signed certificate if none exists; return its SHA-256 fingerprint."""
    if not cert_path.exists():
        if key_path.exists():
            raise UsageError(f"{key_path} exists without {cert_path}; restore or remove both")
        cert_pem, key_pem = make_self_signed_certificate(socket.gethostname())
        _write_private(key_path, key_pem)
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(cert_pem)
    return fingerprint(cert_path.read_bytes())


def make_self_signed_certificate(hostname: str) -> tuple[bytes, bytes]:
    """A 10-year certificate for localhost, the loopback addresses and ``hostname``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"roost server {hostname}")])
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    if hostname and hostname != "localhost":
        names.append(x509.DNSName(hostname))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3652))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the DER certificate as ``AB:CD:...`` (what agents pin)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

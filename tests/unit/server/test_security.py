"""Passwords, tokens, the server master key, wrapped secrets and the TLS certificate."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509

from roost.errors import CorruptObject, UsageError
from roost.server import security


def test_password_hash_verifies_only_the_right_password() -> None:
    stored = security.hash_password("s3cret")
    assert stored.startswith("scrypt$")
    assert security.verify_password("s3cret", stored)
    assert not security.verify_password("S3cret", stored)
    assert not security.verify_password("s3cret", "garbage")
    assert security.hash_password("s3cret") != stored  # salted


def test_token_hash_is_sha256_hex() -> None:
    token = security.new_token(24)
    assert "." not in token and len(token) == 32
    assert security.token_matches(token, security.hash_token(token))
    assert len(security.hash_token(token)) == 64


def test_master_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    first = security.load_master_key(tmp_path)
    path = tmp_path / security.MASTER_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert security.load_master_key(tmp_path) == first and len(first) == 32


def test_master_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(security.MASTER_KEY_ENV, "ab" * 32)
    assert security.load_master_key(tmp_path) == bytes.fromhex("ab" * 32)
    assert not (tmp_path / security.MASTER_KEY_FILE).exists()
    monkeypatch.setenv(security.MASTER_KEY_ENV, "abc")
    with pytest.raises(UsageError, match="64 hexadecimal characters"):
        security.load_master_key(tmp_path)


def test_wrapped_secrets_need_the_same_key_and_purpose() -> None:
    box = security.SecretBox(bytes(32))
    wrapped = box.wrap("passphrase", "repository passphrase")
    assert box.unwrap(wrapped, "repository passphrase") == "passphrase"
    with pytest.raises(CorruptObject, match="is not the one this catalog was created with"):
        security.SecretBox(bytes([1]) * 32).unwrap(wrapped, "repository passphrase")
    with pytest.raises(CorruptObject):
        box.unwrap(wrapped, "recovery key")


def test_self_signed_certificate(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    fingerprint = security.ensure_certificate(cert_path, key_path)
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days >= 3650
    assert security.ensure_certificate(cert_path, key_path) == fingerprint  # kept, not renewed

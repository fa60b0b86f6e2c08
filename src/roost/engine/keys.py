"""Key files: the master key wrapped by passphrases (Argon2id) or by a recovery key.

A key file (``keys/<id>``) is JSON, readable without the passphrase::

    {"version": 1, "kind": "passphrase" | "recovery", "created": "...", "hostname": "...",
     "kdf": {"name": "argon2id", "memory_kib": 65536, "iterations": 3, "lanes": 4,
             "salt": "<b64>"},
     "wrapped": "<b64 of crypto object: version | nonce | AES-GCM(master key JSON)>"}

Several key files may wrap the same master key, so a repository can have several passphrases;
removing one never touches the data. The recovery key is 32 random bytes printed in groups;
because it has full entropy it is stretched with HKDF instead of a slow KDF.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from roost.engine.crypto import Key, MasterKey, content_hash
from roost.errors import CorruptObject, UnsupportedFormat, UsageError, WrongPassphrase

KEYFILE_VERSION = 1
WRAP_AAD = b"roost-keyfile-v1"
RECOVERY_GROUPS = 8


@dataclass(frozen=True)
class KdfParams:
    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4

    @classmethod
    def from_environment(cls) -> KdfParams:
        """Normal parameters, or cheap ones when ROOST_KDF_PROFILE=test (test suites only)."""
        if os.environ.get("ROOST_KDF_PROFILE") == "test":
            return cls(memory_kib=64, iterations=1, lanes=1)
        return cls()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError as exc:
        raise CorruptObject("a key file holds malformed base64") from exc


def _argon2(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=32,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive(passphrase.encode())


def _hkdf(recovery_secret: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"roost-recovery").derive(
        recovery_secret
    )


def _wrap(wrapping_key: bytes, master: MasterKey) -> str:
    plaintext = json.dumps(master.to_json()).encode()
    return _b64(Key(MasterKey(wrapping_key, bytes(32), 1)).encrypt(plaintext, WRAP_AAD))


def _unwrap(wrapping_key: bytes, wrapped: bytes) -> MasterKey | None:
    try:
        plaintext = Key(MasterKey(wrapping_key, bytes(32), 1)).decrypt(wrapped, WRAP_AAD)
    except CorruptObject:
        return None
    return MasterKey.from_json(json.loads(plaintext))


def _base_document(kind: str) -> dict[str, Any]:
    return {
        "version": KEYFILE_VERSION,
        "kind": kind,
        "created": datetime.now(UTC).isoformat(),
        "hostname": socket.gethostname(),
    }


def make_passphrase_keyfile(master: MasterKey, passphrase: str, params: KdfParams) -> bytes:
    if not passphrase:
        raise UsageError("the passphrase must not be empty")
    salt = os.urandom(16)
    doc = _base_document("passphrase")
    doc["kdf"] = {
        "name": "argon2id",
        "memory_kib": params.memory_kib,
        "iterations": params.iterations,
        "lanes": params.lanes,
        "salt": _b64(salt),
    }
    doc["wrapped"] = _wrap(_argon2(passphrase, salt, params), master)
    return json.dumps(doc, indent=1).encode()


def make_recovery_keyfile(master: MasterKey) -> tuple[bytes, str]:
    """Return the key file and the printable recovery key that opens it."""
    secret = os.urandom(20)
    salt = os.urandom(16)
    doc = _base_document("recovery")
    doc["kdf"] = {"name": "hkdf-sha256", "salt": _b64(salt)}
    doc["wrapped"] = _wrap(_hkdf(secret, salt), master)
    return json.dumps(doc, indent=1).encode(), format_recovery_key(secret)


def format_recovery_key(secret: bytes) -> str:
    text = base64.b32encode(secret).decode().rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_recovery_key(text: str) -> bytes | None:
    """Return the secret, or None when ``text`` does not look like a recovery key."""
    compact = "".join(ch for ch in text.upper() if ch.isalnum())
    if len(compact) != 32:
        return None
    try:
        return base64.b32decode(compact)
    except ValueError:
        return None


def keyfile_id(data: bytes) -> str:
    return content_hash(data).hex()


def parse_keyfile(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise CorruptObject("a key file is not valid JSON") from exc
    if not isinstance(doc, dict) or "version" not in doc:
        raise CorruptObject("a key file lacks its version")
    if doc["version"] != KEYFILE_VERSION:
        raise UnsupportedFormat(f"key file version {doc['version']} is newer than this Roost")
    return doc


def open_keyfile(doc: dict[str, Any], secret: str) -> MasterKey | None:
    """Try ``secret`` (a passphrase, or a recovery key) on one key file."""
    kdf = doc.get("kdf", {})
    salt = _unb64(kdf.get("salt", ""))
    wrapped = _unb64(doc.get("wrapped", ""))
    if kdf.get("name") == "argon2id":
        params = KdfParams(int(kdf["memory_kib"]), int(kdf["iterations"]), int(kdf["lanes"]))
        return _unwrap(_argon2(secret, salt, params), wrapped)
    if kdf.get("name") == "hkdf-sha256":
        recovery = parse_recovery_key(secret)
        return None if recovery is None else _unwrap(_hkdf(recovery, salt), wrapped)
    raise UnsupportedFormat(f"unknown key derivation {kdf.get('name')!r}")


def open_any(keyfiles: list[dict[str, Any]], secret: str) -> MasterKey:
    """Open the first key file the secret fits; recovery keys are only tried on recovery files."""
    looks_like_recovery = parse_recovery_key(secret) is not None
    for doc in keyfiles:
        if doc.get("kind") == "recovery" and not looks_like_recovery:
            continue
        master = open_keyfile(doc, secret)
        if master is not None:
            return master
    raise WrongPassphrase()

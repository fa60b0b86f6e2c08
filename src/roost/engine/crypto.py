"""The one trust boundary for cryptography: every byte Roost stores passes through ``Key``.

Object layout (version 1)::

    +---------+-------------+------------------------------+
    | 0x01    | nonce (12)  | AES-256-GCM ciphertext + tag |
    +---------+-------------+------------------------------+

The associated data binds an object to its role (``b"blob:" + type + id``, ``b"snapshot"``,
...), so a valid ciphertext moved to another place fails authentication.
Chunk ids are keyed BLAKE3 of the plaintext: equal data gets equal ids inside one repository
(deduplication) while ids reveal nothing to anyone without the key.
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import blake3

from roost.errors import CorruptObject

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

OBJECT_VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
ID_SIZE = 32


@dataclass(frozen=True)
class MasterKey:
    """The repository secret: encryption key, chunk-id MAC key and chunker seed."""

    encryption_key: bytes
    id_key: bytes
    chunker_seed: int

    @classmethod
    def generate(cls) -> MasterKey:
        # os.urandom is what the secrets module draws from; importing secrets would load the
        # system's OpenSSL (through hmac) into every backup worker, 3.4 MiB each, for nothing
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        return cls(os.urandom(32), os.urandom(32), seed or 1)

    def to_json(self) -> dict[str, object]:
        return {
            "encryption": base64.b64encode(self.encryption_key).decode(),
            "id": base64.b64encode(self.id_key).decode(),
            "chunker_seed": self.chunker_seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> MasterKey:
        try:
            enc = base64.b64decode(str(data["encryption"]), validate=True)
            mac = base64.b64decode(str(data["id"]), validate=True)
            seed = int(str(data["chunker_seed"]))
        except (KeyError, ValueError) as exc:
            raise CorruptObject("the key material is malformed") from exc
        if len(enc) != 32 or len(mac) != 32:
            raise CorruptObject("the key material has the wrong length")
        return cls(enc, mac, seed)


_nonces = threading.local()
_NONCE_BATCH = 512


def _forget_nonces_after_fork() -> None:
    # a forked child must never hand out nonces its parent may also use
    global _nonces
    _nonces = threading.local()


os.register_at_fork(after_in_child=_forget_nonces_after_fork)


def random_nonce() -> bytes:
    """12 random bytes from a per-thread pool refilled 512 nonces at a time.

    Nonces stay fully random (AES-GCM with random 96-bit nonces); batching only saves one
    getrandom() system call per object, which showed up in profiles of small-file backups.
    """
    pool: bytes | None = getattr(_nonces, "pool", None)
    offset: int = getattr(_nonces, "offset", 0)
    if pool is None or offset >= len(pool):
        pool, offset = os.urandom(NONCE_SIZE * _NONCE_BATCH), 0
        _nonces.pool = pool
    _nonces.offset = offset + NONCE_SIZE
    return pool[offset : offset + NONCE_SIZE]


class ChunkIds:
    """Names chunks: keyed BLAKE3 of the plaintext with the master key's id key.

    All a backup's scan workers need of the key: they never hold the encryption key, nor
    load ``cryptography`` (~9 MiB of memory in each process).
    """

    def __init__(self, id_key: bytes) -> None:
        self._id_key = id_key

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        """Keyed BLAKE3 of the plaintext; the id under which the chunk is stored."""
        return blake3.blake3(data, key=self._id_key).digest()


def _cipher(encryption_key: bytes) -> tuple[AESGCM, type[Exception]]:
    """AES-256-GCM with the key, and the exception a failed authentication raises.

    Imported here, so that importing this module (as the scan workers do) does not load it.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(encryption_key), InvalidTag


class Key(ChunkIds):
    """Encrypts, decrypts and names objects with one repository's master key."""

    def __init__(self, master: MasterKey) -> None:
        super().__init__(master.id_key)
        self.master = master
        self._aead, self._invalid_tag = _cipher(master.encryption_key)

    def encrypt(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        nonce = random_nonce()
        return bytes((OBJECT_VERSION,)) + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def encrypt_into(self, plaintext: bytes | memoryview, aad: bytes, out: memoryview) -> int:
        """Write what :meth:`encrypt` returns into the start of ``out``; return its length.

        For callers that lay many objects end to end (blobs on their way into a pack): no
        copy of each ciphertext, and none of the whole when they are joined.
        """
        return self._encrypt_at(random_nonce(), plaintext, aad, out, 0)

    def encrypt_all_into(self, pieces: list[tuple[memoryview, bytes]], out: memoryview) -> int:
        """:meth:`encrypt_into` for each (plaintext, aad), end to end from the start of ``out``.

        Returns the bytes written. One draw of random bytes serves all their nonces: the main
        process encrypts every blob of a backup this way, tens of thousands a second.
        """
        nonces = os.urandom(NONCE_SIZE * len(pieces))
        offset = 0
        for number, (plaintext, aad) in enumerate(pieces):
            nonce = nonces[number * NONCE_SIZE : (number + 1) * NONCE_SIZE]
            offset = self._encrypt_at(nonce, plaintext, aad, out, offset)
        return offset

    def _encrypt_at(
        self, nonce: bytes, plaintext: bytes | memoryview, aad: bytes, out: memoryview, at: int
    ) -> int:
        """Write the object (version, nonce, ciphertext and tag) at ``out[at:]``; its end."""
        end = at + len(plaintext) + OVERHEAD
        out[at] = OBJECT_VERSION
        out[at + 1 : at + 1 + NONCE_SIZE] = nonce
        self._aead.encrypt_into(nonce, plaintext, aad, out[at + 1 + NONCE_SIZE : end])
        return end

    def decrypt(self, ciphertext: bytes | memoryview, aad: bytes, what: str = "object") -> bytes:
        """Authenticate and decrypt; raise CorruptObject naming ``what`` on any damage."""
        if len(ciphertext) < OVERHEAD:
            raise CorruptObject(f"{what} is truncated ({len(ciphertext)} bytes)")
        if ciphertext[0] != OBJECT_VERSION:
            raise CorruptObject(f"{what} has unknown encryption version {ciphertext[0]}")
        nonce = bytes(ciphertext[1 : 1 + NONCE_SIZE])
        try:
            return self._aead.decrypt(nonce, ciphertext[1 + NONCE_SIZE :], aad)
        except self._invalid_tag as exc:
            raise CorruptObject(f"{what} failed authentication (damaged or tampered)") from exc


def content_hash(data: bytes | memoryview) -> bytes:
    """Unkeyed BLAKE3, used to name whole storage objects (packs, index files)."""
    return blake3.blake3(data).digest()

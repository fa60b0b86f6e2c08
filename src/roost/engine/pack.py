"""Packs: many encrypted blobs in one storage object that describes itself.

Layout (version 1)::

    blob 0 | blob 1 | ... | blob n-1 | header | header_length: u32 LE | b"RPK1"

Each blob is a crypto object (see crypto.py) whose associated data is
``b"blob" + type byte + blob id``. The header is a crypto object (associated data
``b"pack-header"``) whose plaintext is a version byte followed by the *records*, one fixed-size
entry per blob::

    type: u8 | id: 32 bytes | offset: u64 | length: u32 | raw_length: u32 | compression: u8

Header version 2 (written now) zstd-compresses the records: only the ids are random, so the
other 18 bytes of an entry shrink to about 7 (11 bytes less per blob, 1.5 % of a repository
of a million ~1 KiB files). Version 1 (records as they are) is still read.

``length`` is the stored (encrypted) size, ``raw_length`` the plaintext size. The pack's storage
name is the unkeyed BLAKE3 of its bytes, so ``check --read-data`` can verify a whole pack
without the index, and the index can be rebuilt from the packs alone.

A pack being built is written to a spool file (storage/spool.py), not held in memory, and its
name is hashed as its bytes are written; ``finish`` hands over the file for
``Backend.put_file``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from types import TracebackType
from typing import BinaryIO

import blake3
import zstandard

from roost.engine.crypto import Key
from roost.errors import CorruptObject, StorageError, UnsupportedFormat

PACK_MAGIC = b"RPK1"
HEADER_VERSION = 2  # written; 1 (uncompressed records) is read too
_MAX_HEADER = 256 * 1024 * 1024  # decompressed records, at most (a pack holds far fewer)
TRAILER = struct.Struct("<I4s")
ENTRY = struct.Struct("<B32sQIIB")
ENTRY_ID = struct.Struct("<x32s17x")  # only the blob id of an ENTRY
HEADER_AAD = b"pack-header"

DATA_BLOB = 0
TREE_BLOB = 1
BLOB_TYPES = {DATA_BLOB: "data", TREE_BLOB: "tree"}


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """Where one blob lives inside its pack."""

    type: int
    id: bytes
    offset: int
    length: int
    raw_length: int
    compression: int


def blob_aad(blob_type: int, blob_id: bytes) -> bytes:
    return b"blob" + bytes((blob_type,)) + blob_id


def pack_key(pack_id: bytes) -> str:
    hexid = pack_id.hex()
    return f"data/{hexid[:2]}/{hexid}"


def pack_id_from_key(key: str) -> bytes | None:
    name = key.rsplit("/", 1)[-1]
    try:
        raw = bytes.fromhex(name)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


@dataclass(frozen=True, slots=True)
class SpooledPack:
    """A finished pack: its id and the file that holds its ``size`` bytes (from offset 0)."""

    id: bytes
    file: BinaryIO
    size: int

    def read(self) -> bytes:
        """The whole pack in memory (for tests and small packs)."""
        from roost.storage.spool import read_whole

        return read_whole(self.file, self.size)

    def close(self) -> None:
        self.file.close()  # an unnamed spool file is gone with its last descriptor

    def __enter__(self) -> SpooledPack:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PackBuilder:
    """Accumulates encrypted blobs until the pack is big enough to upload.

    The blobs go straight into a spool file (from ``spool``, default an unnamed file in the
    temp directory; ``io.BytesIO`` keeps a pack in memory), hashed as they are written, so a
    16 MiB pack costs no memory while it fills or is stored. The file is opened with the first
    blob. The entries are kept as the header's packed records: a ``BlobEntry`` per blob (~200
    bytes each, thousands per pack) held every pack's entries until the next checkpoint.
    """

    def __init__(self, spool: Callable[[], BinaryIO] | None = None) -> None:
        self._spool = spool or _temporary_spool
        self._file: BinaryIO | None = None
        self._hash = blake3.blake3()  # the pack id: unkeyed BLAKE3, as crypto.content_hash
        self.records = bytearray()  # one ENTRY per blob, in pack order: the header's body
        self.size = 0
        self.raw_size = 0  # plaintext bytes of the blobs

    @property
    def entries(self) -> list[BlobEntry]:
        return [BlobEntry(*fields) for fields in ENTRY.iter_unpack(self.records)]

    def add(
        self,
        blob_type: int,
        blob_id: bytes,
        ciphertext: bytes | memoryview,
        raw_length: int,
        compression: int,
    ) -> None:
        self._write(ciphertext)
        self.records += ENTRY.pack(
            blob_type, blob_id, self.size, len(ciphertext), raw_length, compression
        )
        self.size += len(ciphertext)
        self.raw_size += raw_length

    def add_segment(
        self, segment: bytes | memoryview, blobs: list[tuple[int, bytes, int, int, int]]
    ) -> None:
        """Append encrypted blobs laid end to end: (type, id, length, raw length, method).

        The bytes are copied into the pack: the caller may reuse its buffer at once.
        """
        if sum(blob[2] for blob in blobs) != len(segment):
            raise ValueError("segment length does not match its blobs")
        self._write(segment)
        offset = self.size
        for blob_type, blob_id, length, raw_length, compression in blobs:
            self.records += ENTRY.pack(blob_type, blob_id, offset, length, raw_length, compression)
            offset += length
            self.raw_size += raw_length
        self.size = offset

    def finish(self, key: Key) -> SpooledPack:
        """Append the encrypted header and the trailer; the pack now belongs to the caller."""
        try:
            packed = zstandard.ZstdCompressor(level=3).compress(self.records)
            sealed = key.encrypt(bytes((HEADER_VERSION,)) + packed, HEADER_AAD)
            self._write(sealed)
            self._write(TRAILER.pack(len(sealed), PACK_MAGIC))
            file = self._open()
            with _spooling():
                file.flush()
        except BaseException:
            self.close()
            raise
        self._file = None
        return SpooledPack(self._hash.digest(), file, self.size + len(sealed) + TRAILER.size)

    def finish_bytes(self, key: Key) -> tuple[bytes, bytes]:
        """(pack id, pack bytes): :meth:`finish` for tests and callers that need the bytes."""
        with self.finish(key) as pack:
            return pack.id, pack.read()

    def close(self) -> None:
        """Drop the pack (a builder abandoned after an error); finish() needs no close."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._file = self._spool()
        return self._file

    def _write(self, data: bytes | memoryview) -> None:
        """Append to the spool file and the hash (the file fails first: disk full)."""
        with _spooling():
            self._open().write(data)
        self._hash.update(data)


def _temporary_spool() -> BinaryIO:
    # imported here: the scan workers import this module and never build a pack
    from roost.storage.spool import open_spool

    return open_spool()


@contextmanager
def _spooling() -> Iterator[None]:
    """A spool file that cannot be made or written fails the backup with advice, not as a bug."""
    try:
        yield
    except OSError as exc:
        raise StorageError(
            f"cannot write a pack to its spool file: {exc.strerror or exc}; free space where "
            "packs are spooled (a local repository's directory, else TMPDIR)"
        ) from exc


def record_ids(records: bytes | bytearray) -> Iterator[bytes]:
    """The blob ids of packed ENTRY records."""
    return map(itemgetter(0), ENTRY_ID.iter_unpack(records))


def header_span(pack_size: int, trailer: bytes) -> tuple[int, int]:
    """From the pack's last bytes, return (offset, length) of its encrypted header."""
    if len(trailer) < TRAILER.size:
        raise CorruptObject("pack is too short to hold a header")
    length, magic = TRAILER.unpack(trailer[-TRAILER.size :])
    if magic != PACK_MAGIC:
        raise CorruptObject("pack trailer has the wrong magic")
    offset = pack_size - TRAILER.size - length
    if offset < 0:
        raise CorruptObject("pack header length exceeds the pack")
    return offset, length


def parse_header(key: Key, sealed: bytes, what: str = "pack header") -> list[BlobEntry]:
    plain = key.decrypt(sealed, HEADER_AAD, what)
    if not plain or plain[0] not in (1, HEADER_VERSION):
        raise UnsupportedFormat(f"{what} has unknown version")
    body: bytes | memoryview = memoryview(plain)[1:]
    if plain[0] == HEADER_VERSION:
        try:
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=_MAX_HEADER)
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"{what} failed to decompress") from exc
    if len(body) % ENTRY.size:
        raise CorruptObject(f"{what} has a truncated entry")
    return [BlobEntry(*fields) for fields in ENTRY.iter_unpack(body)]


def read_pack_entries(key: Key, data: bytes, what: str = "pack") -> list[BlobEntry]:
    """Parse the header of a whole pack held in memory and check entries stay inside it."""
    offset, length = header_span(len(data), data[-TRAILER.size :])
    entries = parse_header(key, data[offset : offset + length], f"{what} header")
    check_bounds(entries, offset, what)
    return entries


def check_bounds(entries: list[BlobEntry], data_end: int, what: str) -> None:
    """Every blob must lie in the data section, before the header starts at ``data_end``."""
    if any(entry.offset + entry.length > data_end for entry in entries):
        raise CorruptObject(f"{what} lists a blob beyond its data section")

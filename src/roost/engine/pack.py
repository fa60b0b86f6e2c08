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
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter

import zstandard

from roost.engine.crypto import Key, content_hash
from roost.errors import CorruptObject, UnsupportedFormat

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


class PackBuilder:
    """Accumulates encrypted blobs until the pack is big enough to upload.

    The pack is written into one growing buffer, and its entries are kept as the header's
    packed records: keeping the pieces and joining them at the end held every 16 MiB pack
    twice while it was uploaded, and a ``BlobEntry`` per blob (~200 bytes each, thousands
    per pack) until the next checkpoint.
    """

    def __init__(self) -> None:
        # BytesIO hands its buffer over without a copy in getvalue() (CPython), so the pack
        # is never in memory twice; its growth is a realloc, which is mremap for big buffers.
        self._data = io.BytesIO()
        self.records = bytearray()  # one ENTRY per blob, in pack order: the header's body
        self.size = 0
        self.raw_size = 0  # plaintext bytes of the blobs

    @property
    def entries(self) -> list[BlobEntry]:
        return [BlobEntry(*fields) for fields in ENTRY.iter_unpack(self.records)]

    def add(
        self, blob_type: int, blob_id: bytes, ciphertext: bytes, raw_length: int, compression: int
    ) -> None:
        self._data.write(ciphertext)
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
        offset = self.size
        for blob_type, blob_id, length, raw_length, compression in blobs:
            self.records += ENTRY.pack(blob_type, blob_id, offset, length, raw_length, compression)
            offset += length
            self.raw_size += raw_length
        self._data.write(segment)
        self.size = offset

    def finish(self, key: Key) -> tuple[bytes, bytes]:
        """Return (pack id, pack bytes) with the encrypted header and trailer appended."""
        packed = zstandard.ZstdCompressor(level=3).compress(self.records)
        sealed = key.encrypt(bytes((HEADER_VERSION,)) + packed, HEADER_AAD)
        self._data.write(sealed)
        self._data.write(TRAILER.pack(len(sealed), PACK_MAGIC))
        data = self._data.getvalue()
        self._data = io.BytesIO()  # drop the shared buffer: a later write would copy it
        return content_hash(data), data


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

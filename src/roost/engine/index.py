"""Index files and the merged in-memory index: which pack holds each blob.

An index file (``index/<blake3 of the stored object>``) is a crypto object with associated data
``b"index"`` whose plaintext is zstd-compressed::

    b"RIX1" | created_ns: u64
    n_packs: u32   then per pack:  pack_id: 32 | n_blobs: u32 | n_blobs x pack.ENTRY
    n_tombs: u32   then per tomb:  pack_id: 32 | blob_id: 32 | tombstoned_ns: u64
    n_super: u32   then per entry: index_id: 32   (index files this one replaces)

Index files are events, applied oldest first (by ``created_ns``, then id): listing a blob in a
pack makes that location live (again); a tombstone marks one location deleted as of its time.
Superseded files are skipped, which is how prune consolidates the index without a lock.
Backups dedup only against live locations; readers fall back to tombstoned ones, because a
tombstoned blob stays in its pack until a later prune proves nobody can still need it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import zstandard

from roost.engine.crypto import Key, content_hash
from roost.engine.pack import ENTRY, BlobEntry
from roost.errors import CorruptObject, UnsupportedFormat

INDEX_MAGIC = b"RIX1"
INDEX_AAD = b"index"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_TOMB = struct.Struct("<32s32sQ")


class Location(NamedTuple):
    pack: bytes
    type: int
    offset: int
    length: int
    raw_length: int
    compression: int
    tombstoned_ns: int = 0


@dataclass
class IndexFile:
    created_ns: int
    packs: dict[bytes, list[BlobEntry]] = field(default_factory=dict)
    tombstones: list[tuple[bytes, bytes, int]] = field(default_factory=list)
    supersedes: list[bytes] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.packs or self.tombstones or self.supersedes)

    def encode(self, key: Key) -> tuple[str, bytes]:
        """Return (storage key, encrypted bytes)."""
        parts = [INDEX_MAGIC, _U64.pack(self.created_ns), _U32.pack(len(self.packs))]
        for pack_id, entries in self.packs.items():
            parts += [pack_id, _U32.pack(len(entries))]
            parts += [
                ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length, e.compression)
                for e in entries
            ]
        parts.append(_U32.pack(len(self.tombstones)))
        parts += [_TOMB.pack(*tomb) for tomb in self.tombstones]
        parts.append(_U32.pack(len(self.supersedes)))
        parts += self.supersedes
        plain = zstandard.ZstdCompressor(level=3).compress(b"".join(parts))
        sealed = key.encrypt(plain, INDEX_AAD)
        return f"index/{content_hash(sealed).hex()}", sealed

    @classmethod
    def decode(cls, key: Key, sealed: bytes, what: str = "index file") -> IndexFile:
        events = IndexEvents.decode(key, sealed, what)
        packs = {
            pack_id: [BlobEntry(*f) for f in ENTRY.iter_unpack(records)]
            for pack_id, records in events.packs.items()
        }
        return IndexFile(events.created_ns, packs, events.tombstones, events.supersedes)


@dataclass
class IndexEvents:
    """An index file decoded only to be merged: each pack's entries stay packed records.

    Loading the index of a large repository is part of every backup's start; building a
    ``BlobEntry`` per blob only to turn it into a ``Location`` cost as much as the rest.
    """

    created_ns: int
    packs: dict[bytes, bytes]  # pack id -> n_blobs x pack.ENTRY
    tombstones: list[tuple[bytes, bytes, int]]
    supersedes: list[bytes]

    @classmethod
    def decode(cls, key: Key, sealed: bytes, what: str = "index file") -> IndexEvents:
        compressed = key.decrypt(sealed, INDEX_AAD, what)
        try:
            plain = zstandard.ZstdDecompressor().decompress(compressed)
            return _Reader(plain, what).read_index()
        except (zstandard.ZstdError, struct.error, IndexError) as exc:
            raise CorruptObject(f"{what} is malformed") from exc


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.view = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.view):
            raise CorruptObject(f"{self.what} is truncated")
        chunk = self.view[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def read_index(self) -> IndexEvents:
        if bytes(self.take(4)) != INDEX_MAGIC:
            raise UnsupportedFormat(f"{self.what} has an unknown format")
        result = IndexEvents(int(_U64.unpack(self.take(8))[0]), {}, [], [])
        for _ in range(self.u32()):
            pack_id = bytes(self.take(32))
            count = self.u32()
            result.packs[pack_id] = bytes(self.take(count * ENTRY.size))
        for _ in range(self.u32()):
            pack, blob, when = _TOMB.unpack(self.take(_TOMB.size))
            result.tombstones.append((pack, blob, when))
        result.supersedes = [bytes(self.take(32)) for _ in range(self.u32())]
        if self.pos != len(self.view):
            raise CorruptObject(f"{self.what} has trailing bytes")
        return result


class MasterIndex:
    """All index files merged; answers 'where is blob X' for backup, restore and check."""

    def __init__(self) -> None:
        self._first: dict[bytes, Location] = {}
        self._more: dict[bytes, list[Location]] = {}
        self.index_ids: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._first)

    def locations(self, blob_id: bytes) -> list[Location]:
        first = self._first.get(blob_id)
        if first is None:
            return []
        return [first, *self._more.get(blob_id, ())]

    def live(self, blob_id: bytes) -> Location | None:
        """A location a backup may dedup against (not tombstoned)."""
        first = self._first.get(blob_id)
        if first is not None and not first.tombstoned_ns:
            return first
        return next((loc for loc in self._more.get(blob_id, ()) if not loc.tombstoned_ns), None)

    def find(self, blob_id: bytes) -> Location | None:
        """Any location to read from, live ones first."""
        return self.live(blob_id) or self._first.get(blob_id)

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._first

    def blob_ids(self) -> Iterator[bytes]:
        return iter(self._first)

    def packs(self) -> set[bytes]:
        found = {loc.pack for loc in self._first.values()}
        for extra in self._more.values():
            found.update(loc.pack for loc in extra)
        return found

    def add_pack(self, pack_id: bytes, entries: Iterable[BlobEntry]) -> None:
        for e in entries:
            loc = Location(pack_id, e.type, e.offset, e.length, e.raw_length, e.compression)
            self._put(e.id, loc)

    def _add_packed(self, pack_id: bytes, records: bytes) -> None:
        """``add_pack`` for packed ENTRY records, without a BlobEntry per blob."""
        first = self._first
        new = tuple.__new__  # Location(...) without its Python-level __new__
        for blob_type, blob_id, offset, length, raw_length, compression in ENTRY.iter_unpack(
            records
        ):
            loc = new(Location, (pack_id, blob_type, offset, length, raw_length, compression, 0))
            old = first.get(blob_id)
            if old is None or old.pack == pack_id:
                first[blob_id] = loc
            else:
                self._put(blob_id, loc)

    def tombstone(self, pack_id: bytes, blob_id: bytes, when_ns: int) -> None:
        for loc in self.locations(blob_id):
            if loc.pack == pack_id:
                self._put(blob_id, loc._replace(tombstoned_ns=when_ns))

    def _put(self, blob_id: bytes, loc: Location) -> None:
        first = self._first.get(blob_id)
        if first is None or first.pack == loc.pack:
            self._first[blob_id] = loc
            return
        extra = self._more.setdefault(blob_id, [])
        for i, other in enumerate(extra):
            if other.pack == loc.pack:
                extra[i] = loc
                return
        extra.append(loc)

    def merge(self, files: Mapping[bytes, IndexFile | IndexEvents]) -> None:
        """Apply index files as events, oldest first, skipping superseded ones."""
        superseded = {old for f in files.values() for old in f.supersedes}
        ordered = sorted((f.created_ns, fid) for fid, f in files.items() if fid not in superseded)
        for _, fid in ordered:
            f = files[fid]
            if isinstance(f, IndexEvents):
                for pack_id, records in f.packs.items():
                    self._add_packed(pack_id, records)
            else:
                for pack_id, entries in f.packs.items():
                    self.add_pack(pack_id, entries)
            for pack_id, blob_id, when in f.tombstones:
                self.tombstone(pack_id, blob_id, when)
        self.index_ids.update(files)

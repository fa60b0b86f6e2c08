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
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import zstandard

from roost.engine.crypto import Key, content_hash
from roost.engine.pack import ENTRY, BlobEntry, record_ids
from roost.errors import CorruptObject, UnsupportedFormat

INDEX_MAGIC = b"RIX1"
INDEX_AAD = b"index"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_TOMB = struct.Struct("<32s32sQ")
ID_SIZE = 32
_SIZE = ENTRY.size
_ID_AT = 1  # where the blob id starts in a pack.ENTRY record
_FIELDS = struct.Struct("<B32xQIIB")  # the rest: type, offset, length, raw_length, compression
_MIN_TABLE = 16
_WIDE = 1 << 32  # from this size of the records on, the table needs 8-byte slots


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
    # More packs, their entries as packed ENTRY records (a pack header's, as a backup has
    # them): no BlobEntry per blob for the packs waiting for a checkpoint.
    packed: dict[bytes, bytes] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.packs or self.packed or self.tombstones or self.supersedes)

    def encode(self, key: Key) -> tuple[str, bytes]:
        """Return (storage key, encrypted bytes)."""
        count = len(self.packs) + len(self.packed)
        parts = [INDEX_MAGIC, _U64.pack(self.created_ns), _U32.pack(count)]
        for pack_id, entries in self.packs.items():
            records = b"".join(
                ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length, e.compression)
                for e in entries
            )
            parts += [pack_id, _U32.pack(len(entries)), records]
        for pack_id, records in self.packed.items():
            parts += [pack_id, _U32.pack(len(records) // ENTRY.size), records]
        parts.append(_U32.pack(len(self.tombstones)))
        parts += [_TOMB.pack(*tomb) for tomb in self.tombstones]
        parts.append(_U32.pack(len(self.supersedes)))
        parts += self.supersedes
        sealed = key.encrypt(_compressed(parts), INDEX_AAD)
        return f"index/{content_hash(sealed).hex()}", sealed

    @classmethod
    def decode(cls, key: Key, sealed: bytes, what: str = "index file") -> IndexFile:
        events = IndexEvents.decode(key, sealed, what)
        packs = {
            pack_id: [BlobEntry(*f) for f in ENTRY.iter_unpack(records)]
            for pack_id, records in events.packs.items()
        }
        return IndexFile(events.created_ns, packs, events.tombstones, events.supersedes)


def _compressed(parts: list[bytes]) -> bytes:
    """One standard zstd frame (content size included) of the parts, without joining them.

    A backup's checkpoint lists up to CHECKPOINT_BLOBS records (~1.5 MiB): joined first, they
    were held twice while the frame was made.
    """
    stream = zstandard.ZstdCompressor(level=3).compressobj(size=sum(map(len, parts)))
    out = [stream.compress(part) for part in parts]
    out.append(stream.flush())
    return b"".join(out)


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
    """All index files merged; answers 'where is blob X' for backup, restore and check.

    Compact, because a backup holds the whole index in memory (a million blobs for a million
    small files): every location is its pack.ENTRY record (50 bytes) in one bytearray, in the
    order blob ids were first seen, plus its pack as a number (4 bytes). An open-addressing
    hash table finds a blob's first record: it holds where the record's id starts in the
    bytearray (never 0, which marks a free slot), 4-16 bytes a blob. That is 60-70 bytes a
    blob, where a dict of ``Location`` tuples took ~280 (a bytes key, a tuple and three ints
    each); ``Location`` objects are made only when asked for.

    A blob stored in several packs has its later locations in ``_more``, and tombstoned
    locations are in ``_tombs``: both are rare, and only a prune makes many of them.

    One writer at a time (the caller's lock); readers may run meanwhile: a record is appended
    before the table points to it, and a grown table replaces the old one in one assignment.
    """

    def __init__(self) -> None:
        self._records = bytearray()  # pack.ENTRY records
        self._pack_of = array("I")  # record number -> pack number
        self._pack_ids: list[bytes] = []  # pack number -> pack id
        self._pack_nos: dict[bytes, int] = {}
        self._table = array("I", bytes(4 * _MIN_TABLE))
        self._count = 0
        self._more: dict[bytes, list[int]] = {}  # blob id -> its other records, oldest first
        self._secondary: set[int] = set()  # records that are no blob's first record
        self._tombs: dict[int, int] = {}  # record number -> tombstoned_ns
        # The Locations locations() made, handed out again while their record is unchanged:
        # prune tells the copy it keeps from the others by identity (``loc is not keep``).
        self._handed_out: dict[int, Location] = {}
        self.index_ids: set[bytes] = set()

    def __len__(self) -> int:
        return self._count

    # -- reading ------------------------------------------------------------------------

    def _first(self, blob_id: bytes) -> int:
        """The blob's first record number, or -1. Kept short: it runs for every chunk."""
        table = self._table
        mask = len(table) - 1
        slot = hash(blob_id) & mask
        records = self._records
        while at := table[slot]:
            # the length check only matters for a shorter id, which could match a prefix
            if records.startswith(blob_id, at) and len(blob_id) == ID_SIZE:
                return at // _SIZE
            slot = (slot + 1) & mask
        return -1

    def _location(self, record: int) -> Location:
        kind, offset, length, raw_length, method = _FIELDS.unpack_from(
            self._records, record * _SIZE
        )
        pack = self._pack_ids[self._pack_of[record]]
        tomb = self._tombs.get(record, 0)
        # tuple.__new__: Location(...) without its Python-level __new__
        return tuple.__new__(Location, (pack, kind, offset, length, raw_length, method, tomb))

    def locations(self, blob_id: bytes) -> list[Location]:
        """Every location of the blob, the first one seen first; the same objects each time."""
        first = self._first(blob_id)
        if first < 0:
            return []
        return [self._handed(r) for r in (first, *self._more.get(blob_id, ()))]

    def _handed(self, record: int) -> Location:
        location = self._handed_out.get(record)
        if location is None:
            location = self._handed_out[record] = self._location(record)
        return location

    def live(self, blob_id: bytes) -> Location | None:
        """A location a backup may dedup against (not tombstoned)."""
        record = self._live(blob_id, self._first(blob_id))
        return None if record < 0 else self._location(record)

    def is_live(self, blob_id: bytes) -> bool:
        """Whether ``live(blob_id)`` would find one, without making the Location."""
        first = self._first(blob_id)
        if first < 0:
            return False
        return first not in self._tombs or self._live(blob_id, first) >= 0

    def _live(self, blob_id: bytes, first: int) -> int:
        tombs = self._tombs
        if first < 0 or first not in tombs:
            return first
        return next((r for r in self._more.get(blob_id, ()) if r not in tombs), -1)

    def find(self, blob_id: bytes) -> Location | None:
        """Any location to read from, live ones first."""
        first = self._first(blob_id)
        if first < 0:
            return None
        live = self._live(blob_id, first)
        return self._location(first if live < 0 else live)

    def __contains__(self, blob_id: object) -> bool:
        return isinstance(blob_id, bytes) and self._first(blob_id) >= 0

    def blob_ids(self) -> Iterator[bytes]:
        """Every blob id, in the order first seen; safe to run while blobs are added."""
        secondary = self._secondary
        step = 4096 * _SIZE  # copied at a time: an export would keep the buffer from growing
        for start in range(0, len(self._records), step):
            chunk = self._records[start : start + step]
            for record, blob_id in enumerate(record_ids(chunk), start // _SIZE):
                if record not in secondary:
                    yield blob_id

    def packs(self) -> set[bytes]:
        return set(self._pack_ids)

    # -- adding -------------------------------------------------------------------------

    def add_pack(self, pack_id: bytes, entries: Iterable[BlobEntry]) -> None:
        packed = [
            ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length, e.compression)
            for e in entries
        ]
        self.add_pack_records(pack_id, b"".join(packed))

    def add_pack_records(self, pack_id: bytes, records: bytes) -> None:
        """``add_pack`` for packed ENTRY records, as index files and pack headers hold them.

        A blob seen before keeps its first location; the same pack's is replaced (and so
        revived), another pack's is added to its list.
        """
        count = len(records) // _SIZE
        if not count:
            return
        pack_no = self._pack_nos.get(pack_id)
        if pack_no is None:
            pack_no = self._pack_nos[pack_id] = len(self._pack_ids)
            self._pack_ids.append(pack_id)
        base = len(self._records)
        self._reserve(self._count + count, base + len(records))
        self._records += records  # in one piece; the few blobs known already are handled below
        self._pack_of.extend(array("I", (pack_no,)) * count)
        table = self._table
        mask = len(table) - 1
        # the ids' hash slots are computed by C loops; Python only probes and stores
        slots = map(mask.__and__, map(hash, record_ids(records)))
        known = 0
        for at, slot in zip(range(base + _ID_AT, base + len(records), _SIZE), slots, strict=True):
            if table[slot]:
                known += self._insert(at, slot)
            else:
                table[slot] = at
        self._count += count - known

    def _insert(self, at: int, slot: int) -> int:
        """Put the record whose id starts at ``at`` in the table; 1 if its blob was known."""
        table = self._table
        mask = len(table) - 1
        records = self._records
        blob_id = bytes(records[at : at + ID_SIZE])
        while other := table[slot]:
            if records.startswith(blob_id, other):
                self._known(blob_id, other // _SIZE, at // _SIZE)
                return 1
            slot = (slot + 1) & mask
        table[slot] = at
        return 0

    def _known(self, blob_id: bytes, first: int, record: int) -> None:
        self._secondary.add(record)
        pack_no = self._pack_of[record]
        for old in (first, *self._more.get(blob_id, ())):
            if self._pack_of[old] == pack_no:
                new = self._records[record * _SIZE : (record + 1) * _SIZE]
                self._records[old * _SIZE : (old + 1) * _SIZE] = new
                self._tombs.pop(old, None)
                self._handed_out.pop(old, None)
                return  # the new record stays unused
        self._more.setdefault(blob_id, []).append(record)

    def tombstone(self, pack_id: bytes, blob_id: bytes, when_ns: int) -> None:
        pack_no = self._pack_nos.get(pack_id)
        first = self._first(blob_id)
        if pack_no is None or first < 0:
            return
        for record in (first, *self._more.get(blob_id, ())):
            if self._pack_of[record] == pack_no:
                self._tombs[record] = when_ns
                self._handed_out.pop(record, None)

    def _reserve(self, count: int, records_size: int) -> None:
        """Grow the table to keep it at most half full with ``count`` ids in it."""
        size = len(self._table)
        wide = records_size >= _WIDE  # offsets past 4 GiB (85 million records) need 8 bytes
        if count * 2 <= size and (self._table.typecode == "Q" or not wide):
            return
        while count * 2 > size:
            size *= 2
        table = array("Q" if wide else "I", bytes(8 * size if wide else 4 * size))
        mask = size - 1
        secondary = self._secondary
        ids = record_ids(self._records)
        for record, blob_id in enumerate(ids):
            if record not in secondary:
                slot = hash(blob_id) & mask
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = record * _SIZE + _ID_AT
        self._table = table

    def merge(
        self, files: Mapping[bytes, IndexFile | IndexEvents], *, consume: bool = False
    ) -> None:
        """Apply index files as events, oldest first, skipping superseded ones.

        With ``consume``, the records of each IndexEvents are dropped once merged, for a
        caller that decoded the files only for this: they need not all wait for the last.
        """
        superseded = {old for f in files.values() for old in f.supersedes}
        ordered = sorted((f.created_ns, fid) for fid, f in files.items() if fid not in superseded)
        self._reserve_for([files[fid] for _, fid in ordered])
        for _, fid in ordered:
            f = files[fid]
            if isinstance(f, IndexEvents):
                for pack_id, records in f.packs.items():
                    self.add_pack_records(pack_id, records)
                if consume:
                    f.packs.clear()
            else:
                for pack_id, entries in f.packs.items():
                    self.add_pack(pack_id, entries)
                for pack_id, records in f.packed.items():
                    self.add_pack_records(pack_id, records)
            for pack_id, blob_id, when in f.tombstones:
                self.tombstone(pack_id, blob_id, when)
        self.index_ids.update(files)

    def _reserve_for(self, files: list[IndexFile | IndexEvents]) -> None:
        """Size the table once for everything ``files`` list, instead of growing it per pack."""
        size = 0
        for f in files:
            if isinstance(f, IndexEvents):
                size += sum(len(records) for records in f.packs.values())
            else:
                size += _SIZE * sum(len(entries) for entries in f.packs.values())
                size += sum(len(records) for records in f.packed.values())
        count = size // _SIZE
        self._reserve(self._count + count, len(self._records) + size)

"""The compact MasterIndex against a plain model of the same events, and its edge cases."""

from __future__ import annotations

import random
import threading

import pytest

from roost.engine import index as index_module
from roost.engine.index import IndexEvents, IndexFile, Location, MasterIndex
from roost.engine.keys import KdfParams
from roost.engine.pack import DATA_BLOB, ENTRY, TREE_BLOB, BlobEntry
from roost.engine.repository import Repository
from roost.storage.memory import MemoryBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)


class Model:
    """The index as it was before it was made compact: a dict of Location lists."""

    def __init__(self) -> None:
        self.locs: dict[bytes, list[Location]] = {}

    def add(self, pack: bytes, entries: list[BlobEntry]) -> None:
        for e in entries:
            new = Location(pack, e.type, e.offset, e.length, e.raw_length, e.compression)
            found = self.locs.setdefault(e.id, [])
            same = [i for i, loc in enumerate(found) if loc.pack == pack]
            if same:
                found[same[0]] = new
            else:
                found.append(new)

    def tombstone(self, pack: bytes, blob: bytes, when: int) -> None:
        found = self.locs.get(blob, [])
        for i, loc in enumerate(found):
            if loc.pack == pack:
                found[i] = loc._replace(tombstoned_ns=when)

    def live(self, blob: bytes) -> Location | None:
        return next((loc for loc in self.locs.get(blob, []) if not loc.tombstoned_ns), None)


def _entry(rng: random.Random, blob: bytes) -> BlobEntry:
    kind = rng.choice((DATA_BLOB, TREE_BLOB))
    return BlobEntry(kind, blob, rng.randrange(1 << 40), rng.randrange(1 << 32), 7, 1)


def _assert_same(index: MasterIndex, model: Model, probes: list[bytes]) -> None:
    assert len(index) == len(model.locs)
    assert list(index.blob_ids()) == list(model.locs)
    assert index.packs() == {loc.pack for locs in model.locs.values() for loc in locs}
    for blob in probes:
        expected = model.locs.get(blob, [])
        assert index.locations(blob) == expected
        assert (blob in index) == bool(expected)
        assert index.live(blob) == model.live(blob)
        assert index.is_live(blob) == (model.live(blob) is not None)
        assert index.find(blob) == (model.live(blob) or (expected[0] if expected else None))


@pytest.mark.parametrize("seed", range(6))
def test_random_events_match_the_model(seed: int) -> None:
    rng = random.Random(seed)
    blobs = [rng.randbytes(32) for _ in range(400)]
    packs = [rng.randbytes(32) for _ in range(12)]
    index, model = MasterIndex(), Model()
    for _ in range(60):
        pack = rng.choice(packs)
        if rng.random() < 0.7:
            entries = [_entry(rng, rng.choice(blobs)) for _ in range(rng.randrange(0, 40))]
            if rng.random() < 0.5:
                index.add_pack(pack, entries)
            else:
                records = b"".join(
                    ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length, e.compression)
                    for e in entries
                )
                index.add_pack_records(pack, records)
            model.add(pack, entries)
        else:
            blob, when = rng.choice(blobs), rng.randrange(1, 1 << 62)
            index.tombstone(pack, blob, when)
            model.tombstone(pack, blob, when)
    _assert_same(index, model, [*blobs, rng.randbytes(32)])


def test_many_blobs_in_small_packs_grow_the_table() -> None:
    rng = random.Random(1)
    index, model = MasterIndex(), Model()
    blobs = [rng.randbytes(32) for _ in range(5000)]
    for start in range(0, len(blobs), 37):
        pack = rng.randbytes(32)
        entries = [_entry(rng, blob) for blob in blobs[start : start + 37]]
        index.add_pack(pack, entries)
        model.add(pack, entries)
    _assert_same(index, model, blobs[::7] + [rng.randbytes(32) for _ in range(100)])


def test_merge_applies_files_oldest_first_and_skips_superseded() -> None:
    a, b, blob = b"a" * 32, b"b" * 32, b"1" * 32
    old = IndexFile(1, {a: [BlobEntry(DATA_BLOB, blob, 0, 10, 20, 1)]})
    tomb = IndexFile(2, tombstones=[(a, blob, 5)])
    relisted = IndexFile(3, packed={a: ENTRY.pack(DATA_BLOB, blob, 0, 10, 20, 1)})
    gone = IndexFile(4, {b: [BlobEntry(DATA_BLOB, b"2" * 32, 0, 1, 1, 0)]})
    replacing = IndexFile(5, {b: [BlobEntry(DATA_BLOB, b"3" * 32, 0, 1, 1, 0)]}, supersedes=[b"g"])
    index = MasterIndex()
    index.merge({b"r": relisted, b"t": tomb, b"o": old, b"g": gone, b"s": replacing})
    assert index.live(blob) == Location(a, DATA_BLOB, 0, 10, 20, 1)  # the listing revived it
    assert b"2" * 32 not in index and b"3" * 32 in index
    assert index.index_ids == {b"r", b"t", b"o", b"g", b"s"}

    tombstoned = MasterIndex()
    tombstoned.merge({b"o": old, b"t": tomb})
    assert tombstoned.live(blob) is None and not tombstoned.is_live(blob)
    assert tombstoned.find(blob) == Location(a, DATA_BLOB, 0, 10, 20, 1, 5)


def test_packed_index_files_round_trip() -> None:
    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    entries = [BlobEntry(DATA_BLOB, bytes([n]) * 32, n * 10, 10, 20, 1) for n in range(3)]
    records = b"".join(ENTRY.pack(*(getattr(e, f) for f in e.__slots__)) for e in entries)
    packed = IndexFile(9, {b"a" * 32: entries[:1]}, packed={b"b" * 32: records})
    assert not packed.is_empty() and IndexFile(1, packed={b"b" * 32: b""}).is_empty() is False
    _, sealed = packed.encode(repo.key)
    decoded = IndexFile.decode(repo.key, sealed)
    assert decoded.packs == {b"a" * 32: entries[:1], b"b" * 32: entries}
    from_events, from_file = MasterIndex(), MasterIndex()
    from_events.merge({b"f": IndexEvents.decode(repo.key, sealed)})
    from_file.merge({b"f": packed})
    for entry in entries:
        assert from_events.locations(entry.id) == from_file.locations(entry.id)


def test_ids_of_another_length_or_type_are_never_found() -> None:
    index = MasterIndex()
    blob = bytes(range(32))
    index.add_pack(b"p" * 32, [BlobEntry(DATA_BLOB, blob, 0, 1, 1, 0)])
    for other in (blob[:31], blob[:1], b"", blob + b"x"):
        assert other not in index and index.locations(other) == [] and index.find(other) is None
    assert "text" not in index and None not in index
    assert blob in index


def test_blob_ids_may_be_listed_while_blobs_are_added() -> None:
    index = MasterIndex()
    rng = random.Random(3)
    index.add_pack(b"p" * 32, [_entry(rng, rng.randbytes(32)) for _ in range(10_000)])
    seen = 0
    for _ in index.blob_ids():
        if seen % 1000 == 0:
            index.add_pack(rng.randbytes(32), [_entry(rng, rng.randbytes(32))])
        seen += 1
    assert seen >= 10_000


def test_readers_see_every_blob_while_a_writer_grows_the_table() -> None:
    rng = random.Random(4)
    index = MasterIndex()
    first = [rng.randbytes(32) for _ in range(500)]
    index.add_pack(b"p" * 32, [_entry(rng, blob) for blob in first])
    stop, missing = threading.Event(), list[bytes]()

    def read() -> None:
        while not stop.is_set():
            missing.extend(blob for blob in first if not index.is_live(blob))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(200):
        index.add_pack(rng.randbytes(32), [_entry(rng, rng.randbytes(32)) for _ in range(100)])
    stop.set()
    reader.join()
    assert not missing and len(index) == 500 + 200 * 100


def test_offsets_past_four_gib_widen_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "_WIDE", 50 * 100)  # as if the records passed 4 GiB
    rng = random.Random(5)
    index, model = MasterIndex(), Model()
    blobs = [rng.randbytes(32) for _ in range(300)]
    for start in range(0, 300, 60):
        pack, entries = rng.randbytes(32), [_entry(rng, b) for b in blobs[start : start + 60]]
        index.add_pack(pack, entries)
        model.add(pack, entries)
    assert index._table.typecode == "Q"
    _assert_same(index, model, blobs)


def test_locations_hands_out_the_same_objects_until_the_location_changes() -> None:
    # prune keeps one copy and tombstones the others by identity (``loc is not keep``)
    a, b, blob = b"a" * 32, b"b" * 32, b"1" * 32
    index = MasterIndex()
    index.add_pack(a, [BlobEntry(DATA_BLOB, blob, 0, 10, 20, 1)])
    index.add_pack(b, [BlobEntry(DATA_BLOB, blob, 5, 10, 20, 1)])
    first, second = index.locations(blob)
    assert all(x is y for x, y in zip(index.locations(blob), (first, second), strict=True))
    index.tombstone(a, blob, 7)
    tombstoned, same = index.locations(blob)
    assert tombstoned.tombstoned_ns == 7 and tombstoned is not first and same is second
    index.add_pack(a, [BlobEntry(DATA_BLOB, blob, 3, 10, 20, 1)])
    assert index.locations(blob)[0] == Location(a, DATA_BLOB, 3, 10, 20, 1)


def test_loading_many_index_files_consumes_each_once_merged() -> None:
    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    rng = random.Random(6)
    blobs = [rng.randbytes(32) for _ in range(50)]
    for number in range(10):  # overlapping files: blobs listed again, in other packs too
        pack = bytes([number % 4]) * 32
        entries = [_entry(rng, blob) for blob in rng.sample(blobs, 12)]
        repo.write_index_file(IndexFile(number, {pack: entries}, [(pack, blobs[number], 9)]))
    files = repo.read_index_files()
    expected = MasterIndex()
    expected.merge(files)
    events = {
        fid: IndexEvents.decode(repo.key, repo.backend.get(f"index/{fid.hex()}")) for fid in files
    }
    consumed = MasterIndex()
    consumed.merge(events, consume=True)
    assert all(not e.packs for e in events.values())
    loaded = repo.load_index()
    for index in (consumed, loaded):
        assert list(index.blob_ids()) == list(expected.blob_ids())
        assert all(index.locations(b) == expected.locations(b) for b in blobs)
        assert index.index_ids == set(files)


def test_an_index_file_is_one_zstd_frame_that_states_its_size() -> None:
    """Index files made from parts, unjoined, are still the standard frames every Roost reads
    (a frame without its content size would not decompress in one call)."""
    import zstandard

    from roost.engine.index import INDEX_AAD

    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    entries = [BlobEntry(DATA_BLOB, bytes([n]) * 32, n * 10, 10, 20, 2) for n in range(200)]
    index_file = IndexFile(5, {b"p" * 32: entries}, tombstones=[(b"p" * 32, b"t" * 32, 7)])
    _, sealed = index_file.encode(repo.key)
    frame = repo.key.decrypt(sealed, INDEX_AAD)
    plain = zstandard.ZstdDecompressor().decompress(frame)
    assert zstandard.get_frame_parameters(frame).content_size == len(plain)
    assert IndexFile.decode(repo.key, sealed) == index_file

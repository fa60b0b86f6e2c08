"""PackBuilder: the layout it writes, its entries, and that a pack is never held twice."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from roost.engine.crypto import Key, MasterKey, content_hash
from roost.engine.pack import (
    DATA_BLOB,
    ENTRY,
    HEADER_AAD,
    HEADER_VERSION,
    PACK_MAGIC,
    TRAILER,
    TREE_BLOB,
    BlobEntry,
    PackBuilder,
    header_span,
    read_pack_entries,
    record_ids,
)
from roost.errors import CorruptObject, UnsupportedFormat

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def key() -> Key:
    return Key(MasterKey.generate())


def test_blobs_and_segments_land_where_the_entries_say(key: Key) -> None:
    builder = PackBuilder()
    builder.add(TREE_BLOB, b"t" * 32, b"tree-bytes", 30, 1)
    segment = b"first" + b"second!"
    builder.add_segment(
        segment, [(DATA_BLOB, b"a" * 32, 5, 50, 1), (DATA_BLOB, b"b" * 32, 7, 7, 0)]
    )
    assert (builder.size, builder.raw_size) == (22, 87)
    expected = [
        BlobEntry(TREE_BLOB, b"t" * 32, 0, 10, 30, 1),
        BlobEntry(DATA_BLOB, b"a" * 32, 10, 5, 50, 1),
        BlobEntry(DATA_BLOB, b"b" * 32, 15, 7, 7, 0),
    ]
    assert builder.entries == expected
    assert list(record_ids(builder.records)) == [e.id for e in expected]

    pack_id, data = builder.finish(key)
    assert type(data) is bytes and pack_id == content_hash(data)
    assert data[:22] == b"tree-bytes" + segment
    assert read_pack_entries(key, data) == expected
    assert bytes(builder.records) == b"".join(
        ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length, e.compression) for e in expected
    )


def test_a_segment_that_does_not_match_its_blobs_changes_nothing() -> None:
    builder = PackBuilder()
    with pytest.raises(ValueError):
        builder.add_segment(b"12345", [(DATA_BLOB, b"a" * 32, 4, 4, 0)])
    assert (builder.size, builder.raw_size, builder.entries) == (0, 0, [])


def test_segments_may_be_memoryview_slices(key: Key) -> None:
    segment = os.urandom(1000)
    builder = PackBuilder()
    view = memoryview(segment)
    builder.add_segment(view[:400], [(DATA_BLOB, b"a" * 32, 400, 400, 0)])
    builder.add_segment(view[400:], [(DATA_BLOB, b"b" * 32, 600, 600, 0)])
    _, data = builder.finish(key)
    assert data[:1000] == segment


def test_a_segment_buffer_may_be_reused_once_added(key: Key) -> None:
    buffer = bytearray(b"a" * 100)
    builder = PackBuilder()
    builder.add_segment(memoryview(buffer), [(DATA_BLOB, b"a" * 32, 100, 100, 0)])
    buffer[:] = b"b" * 100  # a worker's thread seals its next batch into the same buffer
    _, data = builder.finish(key)
    assert data[:100] == b"a" * 100


def test_finishing_a_pack_makes_no_second_copy_of_it(key: Key) -> None:
    tracemalloc.start()
    try:
        builder = PackBuilder()
        for number in range(8):
            segment = os.urandom(2 * MIB)  # the caller lets go of each once it is in the pack
            builder.add_segment(segment, [(DATA_BLOB, bytes([number]) * 32, 2 * MIB, 2 * MIB, 0)])
        del segment
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        _, data = builder.finish(key)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data) > 16 * MIB and before > 16 * MIB
    assert peak - before < 3 * MIB  # joining the pieces used to allocate all 16 MiB again


def _pack_with(key: Key, count: int) -> tuple[bytes, list[BlobEntry]]:
    builder = PackBuilder()
    for number in range(count):
        builder.add(DATA_BLOB, os.urandom(32), b"x" * (600 + number % 50), 1000, 2)
    entries = builder.entries
    return builder.finish(key)[1], entries


def test_the_header_is_compressed_and_read_back_exactly(key: Key) -> None:
    data, entries = _pack_with(key, 2000)
    offset, length = header_span(len(data), data[-TRAILER.size :])
    # random ids stay 32 bytes; the other 18 bytes of an entry shrink
    assert length < 2000 * (ENTRY.size - 8)
    plain = key.decrypt(data[offset : offset + length], HEADER_AAD)
    assert plain[0] == HEADER_VERSION == 2
    assert read_pack_entries(key, data) == entries


def test_packs_with_the_uncompressed_version_1_header_are_still_read(key: Key) -> None:
    data, entries = _pack_with(key, 50)
    offset, _ = header_span(len(data), data[-TRAILER.size :])
    records = b"".join(
        ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length, e.compression) for e in entries
    )
    sealed = key.encrypt(b"\x01" + records, HEADER_AAD)
    old = data[:offset] + sealed + TRAILER.pack(len(sealed), PACK_MAGIC)
    assert read_pack_entries(key, old) == entries


def test_a_header_of_an_unknown_version_or_damaged_records_is_refused(key: Key) -> None:
    data, _ = _pack_with(key, 10)
    offset, _ = header_span(len(data), data[-TRAILER.size :])
    for plain, error, message in (
        (b"\x07" + b"r" * 50, UnsupportedFormat, "unknown version"),
        (b"\x02not zstd at all", CorruptObject, "failed to decompress"),
    ):
        sealed = key.encrypt(plain, HEADER_AAD)
        bad = data[:offset] + sealed + TRAILER.pack(len(sealed), PACK_MAGIC)
        with pytest.raises(error, match=message):
            read_pack_entries(key, bad)

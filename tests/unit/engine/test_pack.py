"""PackBuilder: the layout it writes, its entries, and that a pack lives in its spool file."""

from __future__ import annotations

import functools
import io
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard
from tests.helpers.spool import open_spool_files

from roost.engine import crypto
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
from roost.errors import CorruptObject, StorageError, UnsupportedFormat
from roost.storage.spool import open_spool

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

    pack_id, data = builder.finish_bytes(key)
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
    _, data = builder.finish_bytes(key)
    assert data[:1000] == segment


def test_a_segment_buffer_may_be_reused_once_added(key: Key) -> None:
    buffer = bytearray(b"a" * 100)
    builder = PackBuilder()
    builder.add_segment(memoryview(buffer), [(DATA_BLOB, b"a" * 32, 100, 100, 0)])
    buffer[:] = b"b" * 100  # a worker's thread seals its next batch into the same buffer
    _, data = builder.finish_bytes(key)
    assert data[:100] == b"a" * 100


def test_a_pack_is_built_and_finished_without_holding_it_in_memory(key: Key) -> None:
    segment = os.urandom(2 * MIB)
    tracemalloc.start()
    try:
        builder = PackBuilder()
        for number in range(8):
            builder.add_segment(segment, [(DATA_BLOB, bytes([number]) * 32, 2 * MIB, 2 * MIB, 0)])
        pack = builder.finish(key)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    with pack:
        assert pack.size > 16 * MIB
        assert peak < 1 * MIB  # the BytesIO builder held all 16 MiB of it
        assert pack.id == content_hash(pack.read())


def _pack_of_session_3(key: Key, records: bytes, blobs: bytes) -> tuple[bytes, bytes]:
    """(id, bytes) as the in-memory PackBuilder.finish of session 3 made them."""
    packed = zstandard.ZstdCompressor(level=3).compress(records)
    sealed = key.encrypt(bytes((HEADER_VERSION,)) + packed, HEADER_AAD)
    data = blobs + sealed + TRAILER.pack(len(sealed), PACK_MAGIC)
    return content_hash(data), data


@pytest.mark.parametrize("spool", [open_spool, io.BytesIO], ids=["spool-file", "in-memory"])
def test_a_spooled_pack_is_byte_identical_to_the_in_memory_one(
    key: Key, monkeypatch: pytest.MonkeyPatch, spool: Callable[[], BinaryIO]
) -> None:
    monkeypatch.setattr(crypto, "random_nonce", lambda: b"n" * 12)  # the header's, made equal
    builder = PackBuilder(spool)
    written = []
    for number in range(300):  # small blobs one by one (trees), then segments (file data)
        blob = os.urandom(100 + number)
        builder.add(TREE_BLOB, os.urandom(32), blob, 2 * len(blob), 2)
        written.append(blob)
    for number in range(5):
        segment = os.urandom(3 * MIB + number)
        half = len(segment) // 2
        blobs = [(DATA_BLOB, os.urandom(32), half, half, 0)]
        blobs.append((DATA_BLOB, os.urandom(32), len(segment) - half, len(segment) - half, 0))
        builder.add_segment(memoryview(segment), blobs)
        written.append(segment)
    records = bytes(builder.records)
    assert builder.finish_bytes(key) == _pack_of_session_3(key, records, b"".join(written))


def test_the_spool_file_has_no_name_and_is_gone_once_the_pack_is_closed(
    key: Key, tmp_path: Path
) -> None:
    builder = PackBuilder(functools.partial(open_spool, str(tmp_path)))
    assert open_spool_files(tmp_path) == []  # opened with the first blob
    builder.add(DATA_BLOB, b"a" * 32, b"x" * 1000, 1000, 0)
    assert os.listdir(tmp_path) == [] and len(open_spool_files(tmp_path)) == 1
    with builder.finish(key) as pack:
        assert os.listdir(tmp_path) == [] and pack.read()[:1000] == b"x" * 1000
    assert open_spool_files(tmp_path) == []


def test_an_abandoned_pack_is_dropped_with_its_spool_file(key: Key, tmp_path: Path) -> None:
    builder = PackBuilder(functools.partial(open_spool, str(tmp_path)))
    builder.add(DATA_BLOB, b"a" * 32, b"x" * 1000, 1000, 0)
    builder.close()
    assert open_spool_files(tmp_path) == [] and os.listdir(tmp_path) == []


def test_a_full_spool_disk_is_a_storage_error_and_drops_the_spool_file(
    key: Key, tmp_path: Path
) -> None:
    class Full(io.BytesIO):
        room = 1500

        def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
            if self.tell() + len(data) > self.room:
                raise OSError(28, "No space left on device")
            return super().write(data)

    spool = Full()
    builder = PackBuilder(lambda: spool)
    builder.add(DATA_BLOB, b"a" * 32, b"x" * 1000, 1000, 0)
    with pytest.raises(StorageError, match="No space left on device; free space where packs"):
        builder.add(DATA_BLOB, b"b" * 32, b"y" * 1000, 1000, 0)
    assert builder.size == 1000  # the failed blob is not in the pack
    builder.close()
    assert spool.closed

    spool = Full()
    builder = PackBuilder(lambda: spool)
    builder.add(DATA_BLOB, b"a" * 32, b"x" * 1490, 1490, 0)
    with pytest.raises(StorageError, match="No space"):
        builder.finish(key)  # the header does not fit
    assert spool.closed


def _pack_with(key: Key, count: int) -> tuple[bytes, list[BlobEntry]]:
    builder = PackBuilder()
    for number in range(count):
        builder.add(DATA_BLOB, os.urandom(32), b"x" * (600 + number % 50), 1000, 2)
    entries = builder.entries
    return builder.finish_bytes(key)[1], entries


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

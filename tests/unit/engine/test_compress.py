"""Blob compression: compact zstd frames, the raw fallback, and frames written before."""

from __future__ import annotations

import os

import pytest
import zstandard

from roost.engine import compress
from roost.errors import CorruptObject

TEXT = b"".join(b"line %d of a source file, with some words repeated\n" % n for n in range(4000))


@pytest.mark.parametrize("size", [1, 100, 1000, 4096, 16_385, 131_072, 200_000, 3_000_000])
def test_compact_frames_round_trip_at_every_size_class(size: int) -> None:
    data = (TEXT * (size // len(TEXT) + 1))[:size]
    method, payload = compress.compress(data)
    if method == compress.RAW:  # too small to shrink by MIN_SAVING
        assert size < 100 and payload == data
        return
    assert method == compress.ZSTD_COMPACT
    assert compress.decompress(method, bytes(payload), size) == data


def test_a_compact_frame_is_smaller_than_a_standard_one_and_has_no_magic() -> None:
    data = TEXT[:1000]
    _, compact = compress.compress(data)
    standard = zstandard.ZstdCompressor(level=compress.LEVEL).compress(data)
    assert standard[:4] == b"\x28\xb5\x2f\xfd" and compact[:4] != standard[:4]
    # no magic (4 bytes) and no content size (2 here), at the cost of a window descriptor (1)
    assert len(standard) - len(compact) >= 5


def test_blobs_written_as_standard_frames_are_still_read() -> None:
    standard = zstandard.ZstdCompressor(level=3).compress(TEXT)
    assert compress.decompress(compress.ZSTD, standard, len(TEXT)) == TEXT


def test_incompressible_data_is_stored_raw() -> None:
    data = os.urandom(300_000)
    assert compress.compress(data) == (compress.RAW, data)


def test_a_wrong_length_or_damaged_frame_is_corrupt() -> None:
    method, payload = compress.compress(TEXT)
    with pytest.raises(CorruptObject, match="instead of"):
        compress.decompress(method, bytes(payload), len(TEXT) + 1)
    damaged = bytearray(payload)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(CorruptObject):
        compress.decompress(method, bytes(damaged), len(TEXT))
    with pytest.raises(CorruptObject, match="unknown compression method 9"):
        compress.decompress(9, bytes(payload), len(TEXT))


def test_a_released_compressor_is_made_again_and_compresses_the_same() -> None:
    data = b"a line of some source code;\n" * 100_000  # ~2.7 MB: a context for big inputs
    method, before = compress.compress(data)
    first = compress._local.compact
    compress.release_compressor()
    assert getattr(compress._local, "compact", None) is None
    compress.release_compressor()  # nothing to release: no error
    again = compress.compress(data)
    assert compress._local.compact is not first
    assert again == (method, before) and method == compress.ZSTD_COMPACT
    assert compress.decompress(method, bytes(before), len(data)) == data

"""zstd compression that does not waste time on data that will not shrink.

Before compressing a blob larger than the probe, its first ``PROBE_SIZE`` bytes are compressed
at level 1; if that sample saves under ``MIN_SAVING`` the blob is stored raw. zstd releases the
GIL, so compressors are per thread (a ZstdCompressor is not thread-safe) and a thread pool
scales across cores.
"""

from __future__ import annotations

import threading

import zstandard

from roost.errors import CorruptObject

LEVEL = 3
PROBE_SIZE = 64 * 1024
MIN_SAVING = 0.03

RAW = 0
ZSTD = 1

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    return dctx


def _looks_incompressible(data: bytes | memoryview) -> bool:
    if len(data) <= PROBE_SIZE * 2:
        return False
    sample = data[:PROBE_SIZE]
    return len(_compressor(1).compress(sample)) > PROBE_SIZE * (1 - MIN_SAVING)


def compress(data: bytes | memoryview, level: int = LEVEL) -> tuple[int, bytes | memoryview]:
    """Return (method, payload): zstd when it saves space, else the data unchanged."""
    if not data or _looks_incompressible(data):
        return RAW, data
    packed = _compressor(level).compress(data)
    if len(packed) >= len(data) * (1 - MIN_SAVING):
        return RAW, data
    return ZSTD, packed


def decompress(method: int, payload: bytes, raw_length: int) -> bytes:
    if method == RAW:
        return payload
    if method != ZSTD:
        raise CorruptObject(f"unknown compression method {method}")
    try:
        return _decompressor().decompress(payload, max_output_size=raw_length)
    except zstandard.ZstdError as exc:
        raise CorruptObject("a blob failed to decompress") from exc

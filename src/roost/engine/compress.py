"""zstd compression that does not waste time on data that will not shrink.

Before compressing a blob larger than the probe, its first ``PROBE_SIZE`` bytes are compressed
at level 1; if that sample saves under ``MIN_SAVING`` the blob is stored raw. zstd releases the
GIL, so compressors are per thread (a ZstdCompressor is not thread-safe) and a thread pool
scales across cores.

Blobs are written as *compact* zstd frames (method ``ZSTD_COMPACT``): no magic number and no
content size, 5-8 bytes less per blob than a standard frame, because the index already holds
each blob's method and plaintext length. With a million ~1 KiB files that is 1 % of the
repository. zstd still fits its parameters to the input's size, which it is told without
writing it down. Method ``ZSTD`` (standard frames, written before) is still read.
"""

from __future__ import annotations

import threading

import zstandard

from roost.errors import CorruptObject

LEVEL = 3
PROBE_SIZE = 64 * 1024
# Level 3 would take a 2 MiB window for inputs above 1 MiB; chunks are 1.25 MiB on average
# and matches further back than 1 MiB rarely pay: 1 MiB less per compressing thread's
# context for 0.2 % more bytes (the kernel tree: 253.2 against 252.7 MB). Smaller inputs
# get the window zstd fits to their size, as before.
WINDOW_LOG = 20
MIN_SAVING = 0.03

RAW = 0
ZSTD = 1  # a standard zstd frame (read only)
ZSTD_COMPACT = 2  # a zstd frame without magic number and content size (see above)


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _compact_compressor() -> zstandard.ZstdCompressor:
    """This thread's compressor for compact frames.

    Only the level is set: zstd then derives every other parameter from the level and the
    input's size, as for a standard frame (fixing them all, as ``from_level`` does, cost 5 %
    more time on small inputs).
    """
    cctx: zstandard.ZstdCompressor | None = getattr(_local, "compact", None)
    if cctx is None:
        params = zstandard.ZstdCompressionParameters(
            compression_level=LEVEL,
            window_log=WINDOW_LOG,
            format=zstandard.FORMAT_ZSTD1_MAGICLESS,
            write_content_size=0,
            write_checksum=0,
        )
        cctx = _local.compact = zstandard.ZstdCompressor(compression_params=params)
    return cctx


def release_compressor() -> None:
    """Free this thread's compressor for compact frames; the next compress makes a new one.

    zstd sizes a context for the biggest input it compressed: ~2.5 MiB after a chunk of a
    megabyte or more, held for as long as the thread lives.
    """
    _local.__dict__.pop("compact", None)


def _decompressor(method: int) -> zstandard.ZstdDecompressor:
    cache: dict[int, zstandard.ZstdDecompressor] | None = getattr(_local, "decompressors", None)
    if cache is None:
        cache = _local.decompressors = {}
    dctx = cache.get(method)
    if dctx is None:
        fmt = zstandard.FORMAT_ZSTD1_MAGICLESS if method == ZSTD_COMPACT else zstandard.FORMAT_ZSTD1
        dctx = cache[method] = zstandard.ZstdDecompressor(format=fmt)
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
    if level == LEVEL:
        method, packed = ZSTD_COMPACT, _compact_compressor().compress(data)
    else:
        method, packed = ZSTD, _compressor(level).compress(data)
    if len(packed) >= len(data) * (1 - MIN_SAVING):
        return RAW, data
    return method, packed


def decompress(method: int, payload: bytes, raw_length: int) -> bytes:
    if method == RAW:
        return payload
    if method not in (ZSTD, ZSTD_COMPACT):
        raise CorruptObject(f"unknown compression method {method}")
    try:
        plain = _decompressor(method).decompress(payload, max_output_size=raw_length)
    except zstandard.ZstdError as exc:
        raise CorruptObject("a blob failed to decompress") from exc
    if len(plain) != raw_length:  # a compact frame does not state its size: check it here
        raise CorruptObject(f"a blob decompressed to {len(plain)} bytes instead of {raw_length}")
    return plain

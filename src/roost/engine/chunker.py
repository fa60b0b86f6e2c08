"""Content-defined chunking (FastCDC) of files, including sparse ones.

Chunk sizes (min 256 KiB, avg ~1.25 MiB, max 8 MiB; see docs/design.md) are fixed per
repository. The gear table is seeded from the master key, so cut points (and therefore chunk
sizes visible in storage) do not reveal known content to someone without the key.

Files are read in blocks of at least ``max_size`` and cut with ``cut_buf``; the last chunk of a
block may end only because the block ended, so it is carried over and cut again with the next
block. Any other cut lies wholly inside the block and is exactly the cut a streaming chunker
makes, because FastCDC decides a cut from the bytes between the chunk's start and the cut.
(pyfastcdc's own ``cut_stream`` allocates and zero-fills a 16 MiB buffer per file, which
dominated backups of trees with many medium-sized files.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from pyfastcdc import FastCDC

BLOCK_SIZE = 16 * 1024 * 1024


class ExtentReader:
    """Reads the data extents of a file descriptor back to back, in blocks."""

    def __init__(self, fd: int, extents: list[tuple[int, int]]) -> None:
        self._fd = fd
        self._extents = list(extents)
        self._index = 0
        self._offset = 0  # within the current extent
        self.bytes_read = 0

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; fewer only at the end (or if the file shrank meanwhile)."""
        parts: list[bytes] = []
        wanted = size
        while wanted and self._index < len(self._extents):
            start, length = self._extents[self._index]
            take = min(wanted, length - self._offset)
            data = os.pread(self._fd, take, start + self._offset) if take > 0 else b""
            if take > 0 and not data:  # the file shrank: stop, the caller detects the change
                self._index = len(self._extents)
                break
            parts.append(data)
            wanted -= len(data)
            self._offset += len(data)
            if self._offset >= length:
                self._index, self._offset = self._index + 1, 0
        chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        self.bytes_read += len(chunk)
        return chunk


class Chunker:
    """Cuts files into chunks; one FastCDC instance per thread (it is not thread-safe)."""

    def __init__(self, min_size: int, avg_size: int, max_size: int, seed: int) -> None:
        self.min_size = min_size
        self.max_size = max_size
        self._params = (avg_size, min_size, max_size, seed)
        self._local = threading.local()

    def _cdc(self) -> FastCDC:
        cdc: FastCDC | None = getattr(self._local, "cdc", None)
        if cdc is None:
            avg, low, high, seed = self._params
            cdc = self._local.cdc = FastCDC(avg, min_size=low, max_size=high, seed=seed)
        return cdc

    def chunks(self, stream: ExtentReader) -> Iterator[bytes]:
        """Yield each chunk as its own bytes object (safe to hand to other threads)."""
        block_size = max(BLOCK_SIZE, 2 * self.max_size)
        carry = b""
        while True:
            block = stream.read(block_size)
            final = len(block) < block_size
            data = carry + block if carry else block
            if not data:
                return
            cuts = [(c.offset, c.length) for c in self._cdc().cut_buf(data)]
            if not final:
                *cuts, (tail, _) = cuts  # may end only because the block did: cut it again
                carry = data[tail:]
            view = memoryview(data)
            for offset, length in cuts:
                yield bytes(view[offset : offset + length])
            if final:
                return

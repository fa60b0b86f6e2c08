"""Content-defined chunking (FastCDC) of files, including sparse ones.

Chunk sizes (min 256 KiB, avg ~1.25 MiB, max 8 MiB; see docs/design.md) are fixed per
repository. The gear table is seeded from the master key, so cut points (and therefore chunk
sizes visible in storage) do not reveal known content to someone without the key.

Files are read in blocks, each appended to the uncut tail of the previous one, and cut with
``cut_buf``; the last chunk may end only because the data ended, so it is carried over and
cut again with the next block. Any other cut is exactly the cut a streaming chunker makes,
because FastCDC decides a cut from the bytes between the chunk's start and the cut.
(pyfastcdc's own ``cut_stream`` allocates and zero-fills a 16 MiB buffer per file, which
dominated backups of trees with many medium-sized files.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from pyfastcdc import FastCDC

from roost import memory

# Read this much at a time: small, because the touched part of a thread's buffer is memory
# held (the carried tail of a block is cut again, ~1 MiB on average: little rescanning).
BLOCK_SIZE = 4 * 1024 * 1024
KEEP_BUFFER = 1024 * 1024  # of a thread's read buffer, kept touched between files


class ExtentReader:
    """Reads the data extents of a file descriptor back to back, into the caller's buffer."""

    def __init__(self, fd: int, extents: list[tuple[int, int]]) -> None:
        self._fd = fd
        self._extents = list(extents)
        self._index = 0
        self._offset = 0  # within the current extent
        self.bytes_read = 0

    def readinto(self, view: memoryview) -> int:
        """Fill ``view``; fewer bytes only at the end (or if the file shrank meanwhile)."""
        filled = 0
        while filled < len(view) and self._index < len(self._extents):
            start, length = self._extents[self._index]
            take = min(len(view) - filled, length - self._offset)
            got = os.preadv(self._fd, [view[filled : filled + take]], start + self._offset)
            if take > 0 and not got:  # the file shrank: stop, the caller detects the change
                self._index = len(self._extents)
                break
            filled += got
            self._offset += got
            if self._offset >= length:
                self._index, self._offset = self._index + 1, 0
        self.bytes_read += filled
        return filled


class Chunker:
    """Cuts files into chunks; one FastCDC instance and read buffer per thread."""

    def __init__(self, min_size: int, avg_size: int, max_size: int, seed: int) -> None:
        self.min_size = min_size
        self.max_size = max_size
        self._params = (avg_size, min_size, max_size, seed)
        self._local = threading.local()
        # This thread's read buffer, reused by every file it reads. A new block per read was
        # a fresh mapping to fault in (and, joined with the carried tail, a second one): page
        # faults were a tenth of a big-file backup's CPU, and the two blocks were ~40 MiB of
        # peak memory. What a big file touched goes back after it: between files a thread
        # holds at most KEEP_BUFFER (a scan worker holds its batch's chunks as well).
        self._buffers = memory.ReusedBuffers(0, KEEP_BUFFER)

    def _cdc(self) -> FastCDC:
        cdc: FastCDC | None = getattr(self._local, "cdc", None)
        if cdc is None:
            avg, low, high, seed = self._params
            cdc = self._local.cdc = FastCDC(avg, min_size=low, max_size=high, seed=seed)
        return cdc

    def chunks(self, stream: ExtentReader) -> Iterator[memoryview]:
        """Yield each chunk as a view of this thread's read buffer.

        A view is valid until the next chunk is taken: a caller that keeps a chunk copies
        it (``bytes(chunk)``). A chunk that is already stored then costs no copy, and one
        waiting for a compressing thread is not held twice.
        """
        block_size = BLOCK_SIZE
        buffer = self._buffers.get(block_size + self.max_size)  # a tail is at most one chunk
        try:
            with memoryview(buffer) as view:
                carried = 0  # the uncut tail of the previous block, moved to the start
                while True:
                    end = carried + stream.readinto(view[carried : carried + block_size])
                    self._buffers.reach(end)
                    final = end < carried + block_size
                    if not end:
                        return
                    cuts = [(c.offset, c.length) for c in self._cdc().cut_buf(view[:end])]
                    tail = end
                    if not final and cuts[-1][1] < self.max_size:
                        # may end only because the block did; a maximal chunk ends where it
                        # would with more data (data without cut points is cut into them: it
                        # then carries nothing, rather than a whole chunk, into the next block)
                        *cuts, (tail, _) = cuts
                    for offset, length in cuts:
                        with view[offset : offset + length] as chunk:
                            yield chunk
                    if final:
                        return
                    # (memoryview assignment moves overlapping bytes correctly)
                    carried = end - tail
                    view[:carried] = view[tail:end]
        finally:
            self._buffers.give_back()

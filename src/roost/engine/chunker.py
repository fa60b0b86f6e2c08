"""Content-defined chunking (FastCDC) of files, including sparse ones.

Chunk sizes (min 256 KiB, avg ~1.25 MiB, max 8 MiB; see docs/design.md) are fixed per
repository. The gear table is seeded from the master key, so cut points (and therefore chunk
sizes visible in storage) do not reveal known content to someone without the key.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from pyfastcdc import FastCDC

READ_SIZE = 4 * 1024 * 1024


class ExtentReader:
    """A readinto() stream over the data extents of a file descriptor, back to back."""

    def __init__(self, fd: int, extents: list[tuple[int, int]]) -> None:
        self._fd = fd
        self._extents = list(extents)
        self._index = 0
        self._offset = 0  # within the current extent
        self.bytes_read = 0

    def readinto(self, buffer: memoryview) -> int:
        while self._index < len(self._extents):
            start, length = self._extents[self._index]
            remaining = length - self._offset
            if remaining <= 0:
                self._index += 1
                self._offset = 0
                continue
            want = min(len(buffer), remaining)
            got = os.preadv(self._fd, [buffer[:want]], start + self._offset)
            if got == 0:  # file shrank while we read it; the caller detects the change
                self._index = len(self._extents)
                return 0
            self._offset += got
            self.bytes_read += got
            return got
        return 0


class Chunker:
    """Cuts streams into chunks; one FastCDC instance per thread (it is not thread-safe)."""

    def __init__(self, min_size: int, avg_size: int, max_size: int, seed: int) -> None:
        self.min_size = min_size
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
        for chunk in self._cdc().cut_stream(stream):
            yield bytes(chunk.data)

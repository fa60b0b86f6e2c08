"""Encrypting blobs on their way into a pack, into buffers each thread reuses.

The main process encrypts every blob it packs: the blobs a scan worker compressed end to end
(a *segment* part, ~1 MiB), and the ones it compressed itself (trees, big files' chunks).
Each is encrypted in place into a buffer of the thread that packs it (an anonymous mapping:
``Key.encrypt`` made the ciphertext and then a copy with the nonce in front, two new
mappings per big chunk to fault in), and packed from there before the buffer is reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from roost import memory
from roost.engine.crypto import OVERHEAD, Key
from roost.engine.pack import blob_aad
from roost.engine.procreader import KEEP_SEGMENT

if TYPE_CHECKING:
    from roost.engine.procreader import SegmentEntry

# A thread's buffer for a segment part's blobs, encrypted: its address space, at least
# (untouched pages cost nothing), and what stays touched between parts: as much as the worker
# keeps of its segment buffer (a part, procreader.SEGMENT_PART, plus 29 bytes a blob).
SEALING_BUFFER = 16 * 1024 * 1024
KEEP_SEALING = KEEP_SEGMENT
# The same for one blob a thread compressed itself: as many threads do this, each keeps
# less touched; a big chunk faults in what it needs beyond that.
KEEP_ENCRYPTING = 256 * 1024


class BlobSealer:
    """Encrypts blobs with a repository's key into per-thread reused buffers."""

    def __init__(self, key: Key) -> None:
        self._key = key
        self._parts = memory.ReusedBuffers(SEALING_BUFFER, KEEP_SEALING)
        self._blobs = memory.ReusedBuffers(SEALING_BUFFER, KEEP_ENCRYPTING)

    @contextmanager
    def segment(
        self, segment: bytes | memoryview, blobs: list[SegmentEntry]
    ) -> Iterator[tuple[memoryview, list[SegmentEntry]]]:
        """The blobs of a segment (compressed end to end), encrypted end to end.

        Yields the encrypted segment and its entries (their lengths now with the overhead),
        valid until the block ends.
        """
        buffer = self._parts.get(len(segment) + OVERHEAD * len(blobs))
        pieces = []
        start = 0
        with memoryview(segment) as view, memoryview(buffer) as out:
            for blob_type, blob_id, length, _, _ in blobs:
                pieces.append((view[start : start + length], blob_aad(blob_type, blob_id)))
                start += length
            end = self._key.encrypt_all_into(pieces, out)
            sealed = [(kind, id_, n + OVERHEAD, raw, how) for kind, id_, n, raw, how in blobs]
            with out[:end] as encrypted:
                yield encrypted, sealed
        self._parts.reach(end)
        self._parts.give_back()

    @contextmanager
    def blob(
        self, blob_type: int, blob_id: bytes, payload: bytes | memoryview
    ) -> Iterator[memoryview]:
        """One compressed blob, encrypted; valid until the block ends."""
        buffer = self._blobs.get(len(payload) + OVERHEAD)
        with memoryview(buffer) as out:
            end = self._key.encrypt_into(payload, blob_aad(blob_type, blob_id), out)
            with out[:end] as encrypted:
                yield encrypted
        self._blobs.reach(end)
        self._blobs.give_back()


__all__ = ["KEEP_ENCRYPTING", "KEEP_SEALING", "SEALING_BUFFER", "BlobSealer"]

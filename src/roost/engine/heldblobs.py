"""The blobs a scan worker found, held until the main process says which to seal.

:class:`HeldBlobs` stands in for the BlobSaver while a worker scans a batch
(procreader.BatchScanner): it names each chunk, and keeps it as a :class:`HeldBlob`, for
the batch's ``seal`` to compress (unless done already) into segments.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.engine import compress
from roost.engine.crypto import ChunkIds


@dataclass(slots=True)
class HeldBlob:
    """A blob a scan found, held for its batch's seal: its plaintext until compressed."""

    kind: int
    raw_length: int
    data: bytes | memoryview  # the plaintext, or the payload once compressed
    method: int | None = None  # None: not compressed yet

    def compressed(self) -> tuple[int, bytes | memoryview]:
        if self.method is None:
            self.method, payload = compress.compress(self.data)
            if self.method != compress.RAW:
                # zstd writes into a block sized for the worst case, shrunk in place once
                # done; held in it, each blob leaves the rest a hole the next, bigger block
                # does not fit in, and a worker's heap grew to its batch's plaintext size.
                # Copied to its own size, the big block is reused for the next blob.
                payload = bytes(memoryview(payload))
            self.data = payload
        return self.method, self.data


class HeldBlobs:
    """Stands in for BlobSaver while scanning: ids now, the blobs kept for sealing later.

    An ``eager`` collector compresses each blob at once, from the chunker's buffer: the
    batch is then held compressed, and the plaintext is never copied. Otherwise it keeps a
    copy of the plaintext, and only what the seal wants is compressed.
    """

    def __init__(self, ids: ChunkIds, eager: bool) -> None:
        self.ids = ids
        self.eager = eager
        self.found: dict[bytes, HeldBlob] = {}

    def save(
        self,
        blob_type: int,
        data: bytes | memoryview,
        blob_id: bytes | None = None,
        *,
        inline: bool = False,
    ) -> tuple[bytes, bool]:
        blob_id = blob_id or self.ids.chunk_id(data)
        if blob_id in self.found:
            return blob_id, False
        held = HeldBlob(blob_type, len(data), data)
        if self.eager:
            held.compressed()
        if held.data is data:  # a view of the chunker's buffer (raw, or not compressed yet)
            held.data = bytes(data)
        self.found[blob_id] = held
        return blob_id, True


__all__ = ["HeldBlob", "HeldBlobs"]

"""BlobSaver: dedup, compress, encrypt, pack and upload blobs in a bounded thread pool.

The caller (the archiver) hands over plaintext blobs one by one and gets the blob id back at
once, so trees can be built without waiting for uploads. Compression runs in a thread pool
(zstd releases the GIL; AES-GCM does not, but runs at ~7 GB/s); finished blobs go into one
open pack per blob type, and full packs are stored by upload threads. The blobs waiting for
the pool are bounded in number and bytes, so memory stays bounded whatever the input. The
scan worker processes send blobs compressed, and ``add_compressed`` encrypts them on their
way into the pack. Packs are built in spool files
(see pack.py) where the backend wants them (``Backend.spool_dir``: a local repository's own
directory, so that storing a pack is a link, not a copy), and stored with ``put_file``.

Checkpoints: every ``checkpoint_seconds`` (or ``checkpoint_packs`` packs, or
``checkpoint_blobs`` blobs) the packs uploaded so far get an index file, so after a crash the
next backup finds their blobs and skips them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from roost.engine import compress
from roost.engine.index import IndexFile, MasterIndex
from roost.engine.pack import DATA_BLOB, ENTRY, PackBuilder, pack_key, record_ids
from roost.engine.repository import Repository
from roost.engine.sealing import BlobSealer
from roost.errors import ObjectExists
from roost.storage.spool import open_spool

# Full packs being stored at once, at most (see BlobSaver._builder): a slow storage holds the
# backup back instead of piling up spool files (16 MiB of disk each, and no memory).
MAX_STORING = 2
# Blobs an index file lists at most (1.5 MiB of records): with a million small files, 30 s of
# packs made one index file of 40 MB that was held two or three times while it was encoded,
# and again by every later backup while it loaded the index. 65,536 was the bound until
# session 5: a checkpoint's records, compressed and encrypted copies (~10 MiB) were then one
# of the moments of a backup's peak memory.
CHECKPOINT_BLOBS = 32768
# Plaintext queued for the pool's threads, at most (besides the blobs' count): chunks of
# repetitive data reach the 8 MiB maximum, and four of them in flight, beside the reader's
# buffer, made the main process's peak while it read such files.
IN_FLIGHT_BYTES = 8 * 1024 * 1024
# A blob this big is compressed by the thread that saves it, from the caller's buffer: queued,
# it took the copy of up to a maximal chunk (8 MiB: some repetitive files are cut into
# nothing else) beside the caller's buffer, and half the budget above or more. zstd releases
# the GIL, so the pool compresses what was queued before it meanwhile.
COMPRESS_HERE_FROM = IN_FLIGHT_BYTES // 2
# A blob this small (a directory's tree, mostly: ~4 KiB in the kernel tree) is compressed by
# the thread that saves it too: handing it to the pool (a future, a queue, a wake-up, a
# callback) cost more than compressing it, ~25 us of the walking thread's time per tree.
COMPRESS_HERE_UP_TO = 64 * 1024


@dataclass
class SaverStats:
    blobs_new: int = 0
    blobs_dedup: int = 0
    bytes_new_raw: int = 0  # plaintext bytes of new blobs
    bytes_stored: int = 0  # encrypted, compressed bytes uploaded (packs, incl. headers)
    packs_written: int = 0
    index_files_written: int = 0


class BlobSaver:
    """Saves blobs into packs; ``flush`` writes what is left and the final index."""

    def __init__(
        self,
        repo: Repository,
        index: MasterIndex,
        *,
        workers: int | None = None,
        max_in_flight: int | None = None,
        checkpoint_seconds: float = 30.0,
        checkpoint_packs: int = 32,
        checkpoint_blobs: int = CHECKPOINT_BLOBS,
        on_pack: Callable[[int], None] | None = None,
        on_backlog: Callable[[int], None] | None = None,
    ) -> None:
        self.repo = repo
        self.index = index
        self.stats = SaverStats()
        self._workers = workers or max(2, os.cpu_count() or 2)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="roost-saver")
        # Full packs are stored by threads of their own: stored by the thread that filled
        # them, a pack's write and fsync (~80 ms locally) stopped that thread's compressing,
        # or a worker's sealed blobs waiting to be packed, for as long.
        self._uploader = ThreadPoolExecutor(MAX_STORING, thread_name_prefix="roost-upload")
        self._uploads: set[Future[None]] = set()
        self._in_flight = _InFlight(max_in_flight or self._workers * 2, IN_FLIGHT_BYTES)
        self._lock = threading.Lock()
        # Claimed blobs not yet in the index (it answers for them once their pack is stored):
        # bounded by the open and uploading packs, not the size of the backup.
        self._seen: set[bytes] = set()
        self._open: dict[int, PackBuilder] = {}
        self._spool = functools.partial(open_spool, repo.backend.spool_dir())
        self._storing = 0  # full packs handed to storage, not stored yet
        self._stored = threading.Condition(self._lock)
        self._pending_index = IndexFile(created_ns=0)
        self._pending_blobs = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_seconds = checkpoint_seconds
        self._checkpoint_packs = checkpoint_packs
        self._checkpoint_blobs = checkpoint_blobs
        self._error: BaseException | None = None
        self._futures: set[Future[None]] = set()
        self._on_pack = on_pack
        self._on_backlog = on_backlog
        self._backlog = 0  # plaintext bytes accepted but not yet in an uploaded pack
        self._sealer = BlobSealer(repo.key)

    def has_live(self, blob_id: bytes | None) -> bool:
        """Whether a blob can be referenced as is (saved now, or stored and not tombstoned)."""
        return blob_id is not None and (blob_id in self._seen or self.index.is_live(blob_id))

    def _claim(self, blob_id: bytes, raw_length: int) -> bool:
        """Count the blob; True if this backup must store it."""
        return bool(self.claim_many([(DATA_BLOB, blob_id, raw_length)]))

    def save(
        self,
        blob_type: int,
        data: bytes | memoryview,
        blob_id: bytes | None = None,
        *,
        inline: bool = False,
    ) -> tuple[bytes, bool]:
        """Queue a blob (or encode it in this thread: if ``inline``, up to COMPRESS_HERE_UP_TO
        and from COMPRESS_HERE_FROM bytes); return (id, is_new).

        A view may be reused by the caller once this returns: a queued blob is copied, after
        it has room among the blobs in flight. Raises the first worker error, if any.
        """
        self._raise_if_failed()
        if blob_id is None:
            blob_id = self.repo.key.chunk_id(data)
        if not self._claim(blob_id, len(data)):
            return blob_id, False
        if inline or not COMPRESS_HERE_UP_TO < len(data) < COMPRESS_HERE_FROM:
            self._encode_and_pack(blob_type, blob_id, data)
            return blob_id, True
        self._in_flight.acquire(len(data))
        future = self._pool.submit(self._encode_and_pack, blob_type, blob_id, bytes(data))
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(functools.partial(self._finished, len(data)))
        return blob_id, True

    def _finished(self, size: int, future: Future[None]) -> None:
        self._in_flight.release(size)
        with self._lock:
            self._futures.discard(future)
        if future.cancelled():
            return  # the backup is being torn down after an earlier error or interrupt
        exc = future.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def _report_backlog(self, backlog: int) -> None:
        if self._on_backlog is not None:
            self._on_backlog(backlog)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def claim_many(self, blobs: list[tuple[int, bytes, int]]) -> list[bytes]:
        """Of (type, id, raw length), the ids the caller must store before :meth:`flush`.

        The one dedup decision: a blob is stored by whoever claims it first.
        """
        self._raise_if_failed()
        wanted = []
        raw_total = 0
        seen, is_live = self._seen, self.index.is_live  # as has_live, for every chunk found
        with self._lock:
            for _, blob_id, raw_length in blobs:
                if blob_id not in seen and not is_live(blob_id):
                    seen.add(blob_id)
                    raw_total += raw_length
                    wanted.append(blob_id)
            stats = self.stats
            stats.blobs_dedup += len(blobs) - len(wanted)
            stats.blobs_new += len(wanted)
            stats.bytes_new_raw += raw_total
            self._backlog += raw_total
            backlog = self._backlog
        self._report_backlog(backlog)
        return wanted

    def add_segment(
        self, segment: bytes | memoryview, blobs: list[tuple[int, bytes, int, int, int]]
    ) -> None:
        """Pack claimed data blobs a worker sealed: (type, id, length, raw length, method).

        The segment goes into the open pack in as few pieces as the pack size allows.
        """
        self._raise_if_failed()
        # The views are released on the way out, also when a full pack's upload fails: an
        # exception keeps this frame alive, and Python 3.11's GC can crash clearing a cycle
        # that holds a memoryview another buffer still exports (CPython gh-77894).
        with memoryview(segment) as view:  # slices of it are not copies
            start = 0
            while blobs:
                full: PackBuilder | None = None
                with self._lock:
                    builder = self._builder(DATA_BLOB)
                    count, length = _fitting(blobs, self.repo.config.pack_size - builder.size)
                    with view[start : start + length] as piece:
                        builder.add_segment(piece, blobs[:count])
                    if builder.size >= self.repo.config.pack_size:
                        full = self._full(DATA_BLOB)
                if full is not None:
                    self._store_later(full)
                blobs, start = blobs[count:], start + length

    def add_compressed(
        self, segment: bytes | memoryview, blobs: list[tuple[int, bytes, int, int, int]]
    ) -> None:
        """Encrypt and pack claimed data blobs a worker compressed end to end.

        ``blobs``: (type, id, length, raw length, method) of each, in segment order. They are
        encrypted into this thread's sealing buffer (sealing.py), which goes into the open
        pack as :meth:`add_segment` does.
        """
        self._raise_if_failed()
        with self._sealer.segment(segment, blobs) as (encrypted, sealed):
            self.add_segment(encrypted, sealed)

    def _encode_and_pack(self, blob_type: int, blob_id: bytes, data: bytes | memoryview) -> None:
        """Compress, encrypt into this thread's buffer (sealing.py), and pack from there."""
        method, payload = compress.compress(data)
        with self._sealer.blob(blob_type, blob_id, payload) as encrypted:
            self._pack(blob_type, blob_id, encrypted, len(data), method)
        if len(data) > COMPRESS_HERE_UP_TO and self._in_flight.idle():
            # a big file's chunks grew this thread's zstd context to ~2.5 MiB; the next big
            # file makes another (~0.2 ms), and meanwhile the memory is the backup's again
            compress.release_compressor()

    def _pack(
        self,
        blob_type: int,
        blob_id: bytes,
        sealed: bytes | memoryview,
        raw_length: int,
        method: int,
    ) -> None:
        full: PackBuilder | None = None
        with self._lock:
            builder = self._builder(blob_type)
            builder.add(blob_type, blob_id, sealed, raw_length, method)
            if builder.size >= self.repo.config.pack_size:
                full = self._full(blob_type)
        if full is not None:
            self._store_later(full)

    def _store_later(self, builder: PackBuilder) -> None:
        """Have an upload thread store a full pack (counted in ``_storing``)."""
        future = self._uploader.submit(self._upload, builder)
        with self._lock:
            self._uploads.add(future)
        future.add_done_callback(self._uploaded)

    def _uploaded(self, future: Future[None]) -> None:
        with self._lock:
            self._uploads.discard(future)
        exc = None if future.cancelled() else future.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def _builder(self, blob_type: int) -> PackBuilder:
        """The open pack of ``blob_type`` (with the lock held).

        A new pack is started only while fewer than MAX_STORING full ones are being stored,
        so a slow storage holds back the backup instead of piling up 16 MiB packs on disk
        (one filling while one is stored is what keeps both going).
        """
        builder = self._open.get(blob_type)
        if builder is None:
            while self._storing >= MAX_STORING:
                self._stored.wait()
            builder = self._open.setdefault(blob_type, PackBuilder(self._spool))
        return builder

    def _full(self, blob_type: int) -> PackBuilder:
        """Take the open pack of ``blob_type`` to be stored (with the lock held)."""
        self._storing += 1
        return self._open.pop(blob_type)

    def _upload(self, builder: PackBuilder) -> None:
        """Store a pack counted in ``_storing`` and index it."""
        try:
            pack_id, size = self._store(builder)
        finally:
            with self._lock:
                self._storing -= 1
                self._stored.notify_all()
        records = bytes(builder.records)
        with self._lock:
            self.stats.bytes_stored += size
            self.stats.packs_written += 1
            self.index.add_pack_records(pack_id, records)
            self._seen.difference_update(record_ids(records))  # the index knows them now
            self._pending_index.packed[pack_id] = records
            self._pending_blobs += len(records) // ENTRY.size
            self._backlog -= builder.raw_size
            backlog = self._backlog
            # taken with the same lock: with stores finishing on several threads, the one
            # that crosses the bound writes exactly the packs stored so far
            due = self._take_pending() if self._checkpoint_due() else None
        self._report_backlog(backlog)
        if self._on_pack is not None:
            self._on_pack(size)
        if due is not None:
            self._write_checkpoint(due)

    def _store(self, builder: PackBuilder) -> tuple[bytes, int]:
        # The spool file is gone after the block; identical content may already be stored
        # (packs are content-addressed).
        with builder.finish(self.repo.key) as pack, contextlib.suppress(ObjectExists):
            self.repo.backend.put_file(pack_key(pack.id), pack.file, pack.size)
        return pack.id, pack.size

    def _checkpoint_due(self) -> bool:
        waited = time.monotonic() - self._last_checkpoint
        pending = len(self._pending_index.packed)
        return (
            pending >= self._checkpoint_packs
            or self._pending_blobs >= self._checkpoint_blobs
            or (pending > 0 and waited >= self._checkpoint_seconds)
        )

    def checkpoint(self) -> None:
        """Write an index file for the packs uploaded since the last checkpoint."""
        with self._lock:
            pending = self._take_pending()
        self._write_checkpoint(pending)

    def _take_pending(self) -> IndexFile:
        """The packs stored since the last checkpoint, for the next one (with the lock held)."""
        pending, self._pending_index = self._pending_index, IndexFile(created_ns=0)
        self._pending_blobs = 0
        self._last_checkpoint = time.monotonic()
        return pending

    def _write_checkpoint(self, pending: IndexFile) -> None:
        if pending.is_empty():
            return
        pending.created_ns = time.time_ns()
        self.repo.write_index_file(pending)
        with self._lock:
            self.stats.index_files_written += 1

    def wait_idle(self) -> None:
        """Wait until every queued blob has been encoded into a pack."""
        self._wait_for(self._futures)

    def wait_stored(self) -> None:
        """Wait until the full packs handed to storage are stored and indexed."""
        self._wait_for(self._uploads)

    def _wait_for(self, futures: set[Future[None]]) -> None:
        """Wait until the set (emptied by the futures' callbacks) is empty; raise a failure."""
        while True:
            with self._lock:
                pending = list(futures)
            if not pending:
                break
            for future in pending:
                future.exception()
        self._raise_if_failed()

    def flush(self) -> None:
        """Upload the partly filled packs and write the final index file."""
        self.wait_idle()
        with self._lock:
            leftovers = list(self._open.values())
            self._open.clear()
        for builder in leftovers:
            if builder.records:
                with self._lock:
                    self._storing += 1
                self._store_later(builder)
            else:
                builder.close()
        self.wait_stored()  # the last index lists only stored packs
        self.checkpoint()

    def close(self) -> None:
        """Stop the workers; a pack still open (after an error) is dropped with its spool."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._uploader.shutdown(wait=True)  # at most MAX_STORING packs: let them finish
        with self._lock:
            abandoned = list(self._open.values())
            self._open.clear()
        for builder in abandoned:
            builder.close()


class _InFlight:
    """Bounds the blobs queued for the pool: at most ``count``, and ``budget`` bytes of
    plaintext unless only one is queued (a blob may be as big as the budget or bigger)."""

    def __init__(self, count: int, budget: int) -> None:
        self._changed = threading.Condition()
        self._max_count = count
        self._budget = budget
        self._count = self._bytes = 0

    def acquire(self, size: int) -> None:
        with self._changed:
            while self._count and (
                self._count >= self._max_count or self._bytes + size > self._budget
            ):
                self._changed.wait()
            self._count += 1
            self._bytes += size

    def idle(self) -> bool:
        """Whether no blob is queued but (at most) the one a thread is encoding now."""
        return self._count <= 1

    def release(self, size: int) -> None:
        with self._changed:
            self._count -= 1
            self._bytes -= size
            self._changed.notify_all()


def _fitting(blobs: list[tuple[int, bytes, int, int, int]], room: int) -> tuple[int, int]:
    """How many of ``blobs`` (at least one) fill ``room`` bytes, and their total length."""
    count = length = 0
    for blob in blobs:
        if count and length + blob[2] > room:
            break
        count, length = count + 1, length + blob[2]
    return count, length

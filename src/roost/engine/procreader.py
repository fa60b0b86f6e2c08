"""Reading files in worker processes: the way around the GIL for many small files.

Threads serialise the per-file Python work (open, stat, read, chunk, hash, compress,
encrypt) on one core: profiles showed a full backup using about one core while restic used
two, with 1.5 million futex calls. Worker processes each have their own interpreter. The
walker batches files of at most ``MAX_FILE_SIZE`` bytes; a worker reads each file with the
same :class:`FileReader` the threads use, but its "saver" only seals blobs (compress and
encrypt with the repository key) and returns them. The main process then deduplicates and
packs the sealed blobs. Big files stay on the thread path, where one file's chunks are
compressed in parallel.

Workers start with ``spawn`` (never ``fork`` from a threaded process) and receive the key
material once, in memory, through the pool initializer.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from roost.engine import compress
from roost.engine.chunker import Chunker
from roost.engine.crypto import Key, MasterKey
from roost.engine.filereader import FileReader
from roost.engine.pack import blob_aad
from roost.engine.tree import Node

_PR_SET_PDEATHSIG = 1
MAX_FILE_SIZE = 32 * 1024 * 1024  # larger files: threads (parallel chunks within the file)
BATCH_BYTES = 4 * 1024 * 1024
BATCH_FILES = 256


@dataclass(frozen=True)
class SealedBlob:
    type: int
    id: bytes
    sealed: bytes
    raw_length: int
    compression: int


@dataclass
class FileResult:
    node: Node
    stored: bool
    problem: str | None
    bytes_read: int
    blobs: list[SealedBlob] = field(default_factory=list)


@dataclass(frozen=True)
class WorkerSetup:
    master: MasterKey
    chunk_min: int
    chunk_avg: int
    chunk_max: int


class _Sealer:
    """Stands in for BlobSaver inside a worker: seals blobs and keeps them for the parent."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.blobs: list[SealedBlob] = []
        self._seen: set[bytes] = set()

    def save(
        self, blob_type: int, data: bytes, blob_id: bytes | None = None, *, inline: bool = False
    ) -> tuple[bytes, bool]:
        blob_id = blob_id or self.key.chunk_id(data)
        if blob_id in self._seen:
            return blob_id, False
        self._seen.add(blob_id)
        method, payload = compress.compress(data)
        sealed = self.key.encrypt(payload, blob_aad(blob_type, blob_id))
        self.blobs.append(SealedBlob(blob_type, blob_id, sealed, len(data), method))
        return blob_id, True


_worker: tuple[Key, Chunker] | None = None


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive its backup (killed agent, SIGKILLed `roost backup`)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:  # other platforms: poll
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="roost-parent-watch").start()


def _initialise(setup: WorkerSetup, parent: int) -> None:
    _die_with_parent(parent)
    global _worker
    chunker = Chunker(setup.chunk_min, setup.chunk_avg, setup.chunk_max, setup.master.chunker_seed)
    _worker = (Key(setup.master), chunker)


def read_batch(batch: list[tuple[bytes, Node]]) -> list[FileResult]:
    """Worker entry point: read, chunk and seal each file of the batch."""
    assert _worker is not None, "the worker was not initialised"
    key, chunker = _worker
    return [_read_one(key, chunker, path, node) for path, node in batch]


def _read_one(key: Key, chunker: Chunker, path: bytes, node: Node) -> FileResult:
    sealer = _Sealer(key)
    counted: list[int] = []
    reader = FileReader(sealer, chunker, counted.append)
    stored, problem = reader.read(path, node)
    return FileResult(node, stored, problem, sum(counted), sealer.blobs)


def start_pool(setup: WorkerSetup, processes: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        processes, mp_context=context, initializer=_initialise, initargs=(setup, os.getpid())
    )


def default_processes() -> int:
    # one per core: a third worker on 2 cores was not faster and cost ~50 MB more
    return max(2, os.cpu_count() or 2)


__all__ = [
    "BATCH_BYTES",
    "BATCH_FILES",
    "MAX_FILE_SIZE",
    "FileResult",
    "Future",
    "SealedBlob",
    "WorkerSetup",
    "default_processes",
    "read_batch",
    "start_pool",
]

"""Where a restore's batches of regular files are written: threads, or worker processes.

The restorer adds each regular file's job (restorer.py); this module gathers them into batches
(``BATCH_FILES`` files or ``BATCH_BYTES``; a bigger file alone), hands those out and takes the
outcomes back, in the restorer's thread, through ``on_done``. Small restores and remote
repositories use a few threads. Once a restore of a local repository has ``PROCESS_MIN_FILES``
files or ``PROCESS_MIN_BYTES`` to write, batches go to one worker process per core (they read
the packs themselves, restore_batch.py), at most ``PROCESS_QUEUE`` unanswered per worker. A
killed worker's batches are redone by threads, after removing what it may have half written.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from multiprocessing.connection import wait as wait_connections
from typing import Any

from roost.engine.repository import Repository
from roost.engine.restore_batch import (
    BATCH_BYTES,
    BATCH_FILES,
    FileJob,
    FileOutcome,
    Worker,
    WorkerDied,
    WorkerSetup,
    write_batch,
)
from roost.engine.tree import Node
from roost.storage.base import Backend
from roost.storage.local import LocalBackend
from roost.storage.retry import RetryingBackend

# Worker processes cost ~0.1 s to start: a restore uses them once it has this much to do.
PROCESS_MIN_FILES = 2000
PROCESS_MIN_BYTES = 64 * 1024 * 1024
PROCESS_QUEUE = 3  # batches sent to one worker and not yet answered

# the jobs, and for each what the restorer keeps to account for it (a Node or its document)
Batch = tuple[list[FileJob], list[Node | dict[str, Any]]]
OnDone = Callable[[Batch, list[FileOutcome]], None]


def _local_root(backend: Backend) -> str | None:
    """The directory of a plain local repository (worker processes read it themselves)."""
    while isinstance(backend, RetryingBackend):
        backend = backend.inner
    return str(backend.root) if type(backend) is LocalBackend else None


class BatchDispatcher:
    """Writes batches in threads or worker processes; bounded, so memory stays bounded."""

    def __init__(self, repo: Repository, threads: int, processes: int, on_done: OnDone) -> None:
        self.repo = repo
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="roost-restore")
        self._thread_count = threads
        self._processes = processes
        self._repo_root = _local_root(repo.backend) if processes > 0 else None
        self._on_done = on_done
        # a million small files must not become a million queued work items
        self._inflight: dict[Future[list[FileOutcome]], Batch] = {}  # in threads
        self._procs: list[tuple[Worker, deque[Batch]]] = []  # sent to worker processes
        self._dispatched_files = 0
        self._dispatched_bytes = 0
        self._jobs: list[FileJob] = []  # the batch being filled: jobs, and what each came from
        self._entries: list[Node | dict[str, Any]] = []
        self._batch_bytes = 0

    def add(self, job: FileJob, entry: Node | dict[str, Any]) -> None:
        """Queue one file (its node or tree document comes back with its outcome)."""
        if job[1] > BATCH_BYTES:
            self.flush()  # a big file goes alone
        self._jobs.append(job)
        self._entries.append(entry)
        self._batch_bytes += job[1]
        if len(self._jobs) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Dispatch the batch being filled."""
        if not self._jobs:
            return
        batch = (self._jobs, self._entries)
        self._jobs, self._entries, self._batch_bytes = [], [], 0
        self.dispatch(batch)

    def dispatch(self, batch: Batch) -> None:
        self._dispatched_files += len(batch[0])
        self._dispatched_bytes += sum(job[1] for job in batch[0])
        if self._use_processes():
            self._send(batch)
            return
        while len(self._inflight) >= 4 * self._thread_count:
            self.collect()
        self._submit_to_thread(batch)

    def busy(self) -> bool:
        return bool(self._inflight) or any(queue for _, queue in self._procs)

    def collect(self) -> None:
        """Wait for at least one batch and hand every finished one to ``on_done``."""
        busy = [(worker, queue) for worker, queue in self._procs if queue]
        done = [future for future in self._inflight if future.done()]
        if not done and not busy:
            done = list(wait_futures(self._inflight, return_when=FIRST_COMPLETED)[0])
        for future in done:
            batch = self._inflight.pop(future)
            self._on_done(batch, future.result())
        if busy and not done:
            ready = wait_connections([worker.conn.fileno() for worker, _ in busy])
            for worker, queue in busy:
                if worker.conn.fileno() in ready:
                    self._receive(worker, queue)

    def shutdown(self) -> None:
        failed = self.busy()  # an error: do not wait for queued batches
        self._threads.shutdown(wait=True, cancel_futures=failed)
        for worker, queue in self._procs:
            worker.stop(kill=failed)
            _remove_files(queue)  # killed mid-batch: no half-written file may stay
        self._procs = []

    def _use_processes(self) -> bool:
        if self._procs or self._repo_root is None:
            return bool(self._procs)
        if (
            self._dispatched_files < PROCESS_MIN_FILES
            and self._dispatched_bytes < PROCESS_MIN_BYTES
        ):
            return False
        setup = WorkerSetup(self.repo.key.master, self._repo_root)
        try:
            for _ in range(self._processes):
                self._procs.append((Worker(setup), deque()))
        except OSError:  # cannot start processes here: threads do it all
            self._repo_root = None
        return bool(self._procs)

    def _send(self, batch: Batch) -> None:
        while True:
            if not self._procs:  # every worker died
                self._submit_to_thread(batch)
                return
            worker, queue = min(self._procs, key=lambda item: len(item[1]))
            if len(queue) < PROCESS_QUEUE:
                break
            self.collect()
        try:
            worker.send(batch[0])
        except WorkerDied:
            self._worker_died(worker, queue)
            self._submit_to_thread(batch)
            return
        queue.append(batch)

    def _submit_to_thread(self, batch: Batch) -> None:
        future = self._threads.submit(write_batch, self.repo.key, self.repo.backend, batch[0])
        self._inflight[future] = batch

    def _receive(self, worker: Worker, queue: deque[Batch]) -> None:
        try:
            outcomes = worker.receive()
        except WorkerDied:
            self._worker_died(worker, queue)
            return
        self._on_done(queue.popleft(), outcomes)

    def _worker_died(self, worker: Worker, queue: deque[Batch]) -> None:
        """A worker was killed (out of memory, by hand): threads redo its batches."""
        self._procs = [item for item in self._procs if item[0] is not worker]
        self._repo_root = None
        worker.stop(kill=True)
        _remove_files(queue)  # maybe half written
        while queue:
            self._submit_to_thread(queue.popleft())


def _remove_files(queue: deque[Batch]) -> None:
    for jobs, _ in queue:
        for job in jobs:
            with contextlib.suppress(OSError):
                os.unlink(job[0])


__all__ = ["PROCESS_MIN_BYTES", "PROCESS_MIN_FILES", "PROCESS_QUEUE", "Batch", "BatchDispatcher"]

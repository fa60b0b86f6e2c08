"""The scan worker process: its request loop, and starting it from the main process.

A worker answers ``scan`` and ``seal`` requests with a :class:`procreader.BatchScanner` (the
protocol is described in procreader.py). ``run_worker`` is the entry point that
``workerproc`` starts in a new interpreter; ``handle`` answers one request, and the threads
that stand in for workers (when no process can be started) call it too.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Iterator
from typing import Any

from roost.engine import workerproc
from roost.engine.procreader import BatchScanner, WorkerSetup


def handle(scanner: BatchScanner, message: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """The answers to one request to a scanner (the protocol of :func:`run_worker`).

    A ``seal`` is answered in parts (see :meth:`BatchScanner.seal`): send each answer before
    taking the next, and call ``scanner.release_segment()`` after the last.
    """
    if message[0] == "scan":
        _, batch, items = message
        yield ("scanned", batch, *scanner.scan(batch, items))
    elif message[0] == "seal":
        _, batch, wanted = message
        for segment, entries, last in scanner.seal(batch, wanted):
            # out of band on a worker's channel: the segment is written from here, not pickled
            yield ("sealed", batch, pickle.PickleBuffer(segment), entries, last)
    else:
        raise ValueError(f"unknown request {message[0]!r}")


def run_worker(fd: str) -> None:
    """The worker process: answer ``scan`` and ``seal`` requests until ``stop`` or EOF."""
    conn, setup = workerproc.connect(fd)
    scanner = BatchScanner(setup)
    deferred: deque[tuple[Any, ...]] = deque()
    try:
        while (message := _next_request(conn, scanner, deferred))[0] != "stop":
            for answer in handle(scanner, message):
                conn.send(answer)
            scanner.release_segment()
    except EOFError:
        return
    except BaseException as exc:  # the backup must fail with the real cause
        workerproc.report_failure(conn, exc)


def _next_request(
    conn: workerproc.Channel, scanner: BatchScanner, deferred: deque[tuple[Any, ...]]
) -> tuple[Any, ...]:
    """The request to answer next: a ``scan`` waits while the held blobs are big.

    The main process keeps two batches in flight per worker, so the next ``scan`` often
    arrives before the ``seal`` of the last one. Scanning it at once held two batches'
    plaintext; it now waits while the held blobs take ``SEAL_FIRST`` or more (the seal is on
    its way: a batch is held only after its ``scanned`` answer listed blobs, and the main
    process answers that with a ``seal``). Meanwhile the worker compresses the held blobs,
    which is what the seal would do first, and which may bring them below the bound.
    """
    while True:
        if deferred and not scanner.seals_first():
            return deferred.popleft()
        if scanner.holds_batch() and not conn.poll() and scanner.compress_ahead():
            continue  # the wait for the seal is spent on what the seal will do
        message: tuple[Any, ...] = conn.recv()
        if message[0] != "scan" or not scanner.seals_first():
            return message
        deferred.append(message)


class WorkerProcess:
    """A running scan worker: its process and the main process's end of its socket."""

    def __init__(self, setup: WorkerSetup, name: str) -> None:
        self.name = name
        self.process, self.conn = workerproc.spawn(__name__, setup)

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def stop(self, timeout: float = 10.0) -> None:
        workerproc.stop(self.process, self.conn, timeout)


def start_worker(setup: WorkerSetup, name: str) -> WorkerProcess:
    return WorkerProcess(setup, name)


def prestart_workers(count: int | None = None) -> None:
    """Start the scan workers of the next backup now (see :func:`workerproc.prestart`)."""
    workerproc.prestart(__name__, workerproc.default_processes() if count is None else count)


__all__ = ["WorkerProcess", "handle", "prestart_workers", "run_worker", "start_worker"]

"""Handing regular files to the batch scanners and taking their results back.

The walker queues the regular files it lists in a directory as one
:class:`~roost.engine.dirtask.FileGroup` of the directory's task, with the parent snapshot's
tree of the directory (dirtask.py). Groups travel in batches (a big directory's split over
several) to worker processes (or, for a backup too small to be worth starting them, to a
thread running the same scanner; see procreader.py). A result thread applies the outcomes as
they arrive: the sealed blobs go to the BlobSaver, the counters and progress are updated,
and each task learns what its files became (:class:`~roost.engine.dirtask.BatchOutcome`).
Files a worker hands back (:data:`procreader.MAIN`) wait in a queue that the walking thread
empties, because only it keeps the hardlink map and starts thread reads.

Each task counts the groups and handed-back files it still waits for (``waiting``), so the
walker knows in O(1) whether the oldest finished directory can be encoded; one condition
variable wakes it.
"""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from roost.engine import procreader, scanworker
from roost.engine.dirtask import BatchOutcome, DirTask, FileGroup, Slot
from roost.engine.uploader import BlobSaver
from roost.errors import BackupWorkerError

# gives each scanned slot its child; one call per batch (with the number and bytes of its
# identical files), so tallies are updated once
ApplyResults = Callable[[list[tuple[Slot, procreader.FileResult]], int, int], None]
Message = tuple[Any, ...]
OnMessage = Callable[[Any, Message], None]


class _Worker(Protocol):
    in_flight: int

    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


class _ProcessWorker:
    """A worker process and the thread that takes its answers."""

    def __init__(self, setup: procreader.WorkerSetup, name: str, on_message: OnMessage) -> None:
        self.in_flight = 0
        self._worker = scanworker.start_worker(setup, name)
        self._send_lock = threading.Lock()
        self._on_message = on_message
        self._reader = threading.Thread(target=self._read, name=f"{name}-answers", daemon=True)
        self._reader.start()

    def send(self, message: Message) -> None:
        try:
            with self._send_lock:
                self._worker.conn.send(message)
        except OSError:
            raise self._died() from None

    def _read(self) -> None:
        while True:
            try:
                message = self._worker.conn.recv()
            except (EOFError, OSError):
                if self.in_flight or self._worker.exitcode not in (None, 0):
                    self._on_message(self, ("failed", self._died()))
                return
            self._on_message(self, message)  # a sealed part is packed on return
            self._worker.conn.release_received()

    def _died(self) -> BackupWorkerError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._worker.process.wait(5)
        code = self._worker.exitcode
        how = "was killed" if code is not None and code < 0 else f"exited with status {code}"
        return BackupWorkerError(f"a backup worker process stopped: it {how}")

    def request_stop(self) -> None:
        with contextlib.suppress(OSError, BackupWorkerError):  # a dead worker is stopped
            self.send(("stop",))

    def close(self) -> None:
        self.request_stop()
        self._worker.stop()
        self._reader.join(10)


class _InlineWorker:
    """The same protocol answered by a scanner in this process, on a thread pool."""

    def __init__(
        self,
        setup: procreader.WorkerSetup,
        threads: Executor,
        on_message: Callable[[Any, Message], None],
    ) -> None:
        self.in_flight = 0
        self._scanner = procreader.BatchScanner(setup)
        self._threads = threads
        self._on_message = on_message

    def send(self, message: Message) -> None:
        self._threads.submit(self._answer, message)

    def _answer(self, message: Message) -> None:
        try:
            for answer in scanworker.handle(self._scanner, message):
                self._on_message(self, answer)  # a sealed part is packed on return
        except BaseException as exc:
            self._on_message(self, ("failed", exc))
        self._scanner.release_segment()

    def close(self) -> None:
        pass


class FileBatches:
    """Batches of file groups in flight; ``apply`` turns a slot's result into its child."""

    def __init__(
        self,
        setup: procreader.WorkerSetup,
        processes: int,
        threads: Executor,
        saver: BlobSaver,
        apply: ApplyResults,
    ) -> None:
        self._setup = setup
        self._processes = processes
        self._threads = threads
        self._saver = saver
        self._apply = apply
        self._workers: list[_ProcessWorker] = []
        self._inline: _InlineWorker | None = None
        self._queued: deque[FileGroup] = deque()
        self._queued_files = 0
        self._limit = max(1, processes) * 2  # batches in flight
        self._in_flight: dict[int, tuple[_Worker, list[FileGroup]]] = {}
        self._next_batch = 0
        self.cond = threading.Condition()
        self.handed_back: deque[Slot] = deque()
        self.requeued: deque[FileGroup] = deque()
        self.failure: BaseException | None = None

    def close(self) -> None:
        for worker in self._workers:  # all at once: each takes a moment to exit
            worker.request_stop()
        for worker in self._workers:
            worker.close()
        self._workers = []

    # -- the walking thread -------------------------------------------------------------

    def queue(self, task: DirTask, names: list[bytes]) -> None:
        """Queue the regular files ``names`` of ``task`` for the scanners."""
        if not names:
            return
        task.big = len(names) > procreader.WHOLE_GROUP_FILES
        self.expect(task, 1)  # a task waits for each of its groups
        self._add([FileGroup(task, names)])

    def _add(self, groups: list[FileGroup]) -> None:
        self._queued.extend(groups)
        self._queued_files += sum(len(group.names) for group in groups)
        while self._queued_files >= procreader.BATCH_FILES:
            self.flush()

    def requeue(self) -> None:
        """Queue again the files a scanner did not reach (its batch hit BATCH_BYTES)."""
        with self.cond:
            groups = list(self.requeued)
            self.requeued.clear()
        self._add(groups)

    def expect(self, task: DirTask, count: int) -> None:
        with self.cond:
            task.waiting += count

    def settle(self, task: DirTask) -> None:
        with self.cond:
            task.waiting -= 1
            self.cond.notify_all()

    def flush(self, final: bool = False) -> None:
        """Send the queued files (at most one batch of them) to a scanner."""
        batch = self._take_batch()
        if not batch:
            return
        worker = self._worker(small=final)
        with self.cond:
            while len(self._in_flight) >= self._limit and self.failure is None:
                self.cond.wait()
            self.raise_failure()
            number = self._next_batch = self._next_batch + 1
            self._in_flight[number] = (worker, batch)
            worker.in_flight += 1
        worker.send(("scan", number, [group.request() for group in batch]))

    def _take_batch(self) -> list[FileGroup]:
        """Up to BATCH_FILES queued files, in groups, of which only a big directory's are
        split: any other group goes whole, so that its directory's tree travels once, alone
        when it is bigger than a batch (see procreader.ParentEntries)."""
        batch: list[FileGroup] = []
        room = procreader.BATCH_FILES
        while self._queued and room > 0:
            group = self._queued[0]
            if len(group.names) <= room or not (batch or group.task.big):
                self._queued.popleft()
            elif not group.task.big:
                break  # whole, in the next batch
            else:
                self._queued[0] = FileGroup(group.task, group.names[room:])
                self.expect(group.task, 1)
                group.names = group.names[:room]
            batch.append(group)
            room -= len(group.names)
        self._queued_files -= sum(len(group.names) for group in batch)
        return batch

    def _worker(self, small: bool) -> _Worker:
        if self._processes and not self._workers and not small:
            self._start_processes()
        if self._workers:
            return min(self._workers, key=lambda worker: worker.in_flight)
        if self._inline is None:
            self._inline = _InlineWorker(self._setup, self._threads, self._on_message)
        return self._inline

    def _start_processes(self) -> None:
        try:
            for number in range(self._processes):
                name = f"roost-scan-{number}"
                self._workers.append(_ProcessWorker(self._setup, name, self._on_message))
        except OSError:
            # no new process may be started (the interpreter is not executable for this
            # user, a process limit): the same scanner runs on this process's threads
            self.close()
            self._processes = 0

    def wait_all(self) -> None:
        """Wait until every batch handed out is sealed and packed."""
        with self.cond:
            while self._in_flight and self.failure is None:
                self.cond.wait()
        self.raise_failure()

    # -- the answer threads -------------------------------------------------------------

    def _on_message(self, worker: _Worker, message: Message) -> None:
        try:
            kind = message[0]
            if kind == "scanned":
                self._scanned(worker, *message[1:])
            elif kind == "sealed":
                self._sealed(*message[1:])
            else:
                raise message[1]  # "failed": the worker's exception, or how it died
        except BaseException as exc:  # storage failure, broken worker: the backup fails
            self._fail(exc)

    def _scanned(
        self,
        worker: _Worker,
        number: int,
        answers: list[procreader.GroupResult],
        candidates: list[procreader.Candidate],
        identical_bytes: int,
    ) -> None:
        wanted = self._saver.claim_many(candidates)
        # before the seal is sent: on a pool of several threads, the answer to it may be
        # handled (and the batch forgotten) before this thread goes on
        groups = self._in_flight[number][1]
        if candidates:  # first: the worker seals while we apply
            worker.send(("seal", number, wanted))
        outcome = BatchOutcome()
        for group, answer in zip(groups, answers, strict=False):
            outcome.add(group, answer)
        self._apply(outcome.scanned, outcome.identical, identical_bytes)
        with self.cond:
            outcome.settle()
            self.handed_back.extend(outcome.handed_back)
            # the scanner stopped after BATCH_BYTES: the walker queues the rest again
            self.requeued.extend(outcome.rest)
            self.requeued.extend(groups[len(answers) :])
            if not candidates:  # nothing to seal: the batch is done
                self._done(number)
            self.cond.notify_all()

    def _sealed(
        self,
        number: int,
        segment: memoryview | pickle.PickleBuffer,
        entries: list[procreader.SegmentEntry],
        last: bool,
    ) -> None:
        # a view of the channel's buffer from a process, the scanner's own from a thread;
        # released on the way out, also when packing fails: an exception keeps this frame
        # alive, and Python 3.11's GC can crash clearing a cycle that holds a view another
        # buffer still exports (CPython gh-77894)
        try:
            with memoryview(segment) as view:
                self._saver.add_compressed(view, entries)
        finally:
            if isinstance(segment, pickle.PickleBuffer):
                segment.release()
        if last:
            with self.cond:
                self._done(number)
                self.cond.notify_all()

    def _done(self, number: int) -> None:
        """Forget a batch whose blobs are all packed (with the condition held)."""
        worker, _ = self._in_flight.pop(number)
        worker.in_flight -= 1

    def _fail(self, exc: BaseException) -> None:
        with self.cond:
            if self.failure is None:
                self.failure = exc
            self.cond.notify_all()

    # -- waiting ------------------------------------------------------------------------

    def wait_for(self, task: DirTask) -> None:
        """Block until ``task`` waits for nothing, the walker has work, or a failure."""
        with self.cond:
            while (
                task.waiting and not self.handed_back and not self.requeued and self.failure is None
            ):
                self.cond.wait()

    def take_handed_back(self) -> list[Slot]:
        with self.cond:
            slots = list(self.handed_back)
            self.handed_back.clear()
        return slots

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


__all__ = ["FileBatches"]

"""Engine progress callbacks that become ``progress`` events, at most one per interval.

The callbacks are also the job's cancellation points: the archiver and the restorer call them
for every file and every chunk, so raising :class:`JobCancelled` from one stops the work within
a chunk. The archiver reads ahead of its uploads, though: once the last file is read it waits
for the remaining packs to upload, and calls nothing. So uploads tick the meter too
(:class:`UploadActivity`, called for every 64 KiB sent): progress keeps flowing and a cancel
stops a long, throttled upload within a piece. Callbacks come from several threads (restore
workers, upload workers), hence the lock.

Progress follows what has reached the server: the bytes read less the engine's backlog (read,
not yet in a stored pack), and no more than it was when a pack still on its way was handed to
the write-behind uploads. The engine takes a pack out of its backlog as soon as the storage
accepts it, and the agent's storage (write_behind.py) accepts a pack before sending it: a
throttled job's last pack said 100 %, ETA 0, for the whole time it was being sent.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from roost.agent.paths import to_wire
from roost.agent.reporting import JobReporter
from roost.engine.progress import BackupProgress, RestoreProgress
from roost.protocol.agent_api import JobEvent, Progress

DEFAULT_INTERVAL = 1.0


class Meter:
    """Counts files and bytes and turns them into throttled progress events."""

    def __init__(
        self,
        reporter: JobReporter,
        *,
        total_bytes: int | None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.reporter = reporter
        self.total_bytes = total_bytes
        self.files = 0
        self.bytes = 0
        self.backlog = 0  # read but not yet uploaded: progress follows the transfer
        # Packs accepted by the write-behind uploads and not stored yet: the bytes done when
        # each was accepted (before the engine took it out of the backlog), which caps them.
        self._unstored: dict[int, int] = {}
        self._tokens = itertools.count()
        self._clock = clock
        self._interval = interval
        self._started = clock()
        self._last_sent = self._started
        self._held = False
        self._lock = threading.Lock()

    def hold(self) -> None:
        """Send nothing until :meth:`release` (the estimate must go out first)."""
        with self._lock:
            self._held = True

    def release(self, total_bytes: int | None) -> None:
        """Progress may go out from now on, as a share of ``total_bytes``."""
        with self._lock:
            self.total_bytes = total_bytes
            self._held = False

    def add(self, files: int = 0, size: int = 0) -> None:
        """Count, send if an interval has passed, and raise JobCancelled if asked to stop."""
        with self._lock:
            self.files += files
            self.bytes += size
            now = self._clock()
            due = not self._held and now - self._last_sent >= self._interval
            if due:  # decided under the lock, so two threads never both send
                self._last_sent = now
                current = self.current()
        if due:
            self.reporter.send(JobEvent(progress=current))
        self.reporter.raise_if_cancelled()

    def flush(self, *, check_cancel: bool = True) -> None:
        """Send the current numbers now; raise JobCancelled if the answer says so."""
        with self._lock:
            self._last_sent = self._clock()
            current = self.current()
        self.reporter.send(JobEvent(progress=current))
        if check_cancel:
            self.reporter.raise_if_cancelled()

    def set_backlog(self, count: int) -> None:
        with self._lock:
            self.backlog = max(0, count)

    def pack_accepted(self) -> Callable[[], None]:
        """A pack was handed to the uploads and is not stored yet: until the returned
        function is called, progress stays at most where it is now. (The engine takes the
        pack out of its backlog as soon as the storage accepts it, which is before it is sent.)
        """
        with self._lock:
            token = next(self._tokens)
            self._unstored[token] = self._counted()

        def stored() -> None:
            with self._lock:
                self._unstored.pop(token, None)

        return stored

    def _counted(self) -> int:
        """Bytes read less the backlog: what the engine counts as stored (lock held)."""
        return max(0, self.bytes - self.backlog)

    def _done(self) -> int:
        """What the engine counts, but none of a pack still on its way (lock held)."""
        done = self._counted()
        if self._unstored:
            done = min(done, *self._unstored.values())
        return done

    def current(self) -> Progress:
        elapsed = self._clock() - self._started
        done = self._done()
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = None
        if self.total_bytes is not None and rate > 0:
            eta = max(0.0, (self.total_bytes - done) / rate)
        return Progress(files_done=self.files, bytes_done=done, rate=rate, eta_seconds=eta)


class UploadActivity:
    """Called by the remote storage for every piece it sends (see the module docstring), and
    by the write-behind uploads for every pack they accept (:meth:`pack_accepted`).
    Until the meter exists (before the estimate) it only checks for a cancel."""

    def __init__(self, reporter: JobReporter) -> None:
        self.reporter = reporter
        self.meter: Meter | None = None

    def __call__(self, size: int) -> None:
        if self.meter is not None:
            self.meter.add()
        else:
            self.reporter.raise_if_cancelled()

    def pack_accepted(self, key: str) -> Callable[[], None]:
        """The pack ``key`` is on its way: the meter holds it back until the returned
        function is called, once the pack is stored."""
        if self.meter is None:
            return _nothing
        return self.meter.pack_accepted()


def _nothing() -> None:
    pass


class BackupEvents(BackupProgress):
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def bytes_done(self, count: int) -> None:
        self.meter.add(size=count)

    def file_done(self, path: bytes, state: str) -> None:
        self.meter.add(files=1)

    def files_done(self, count: int) -> None:
        self.meter.add(files=count)

    def missed(self, path: bytes, reason: str) -> None:
        # Not logged one by one: the final event lists every missed file with its reason.
        self.meter.add()

    def backlog(self, count: int) -> None:
        self.meter.set_backlog(count)


class RestoreEvents(RestoreProgress):
    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.warnings = 0

    def bytes_done(self, count: int) -> None:
        self.meter.add(size=count)

    def file_done(self, path: bytes) -> None:
        self.meter.add(files=1)

    def warning(self, path: bytes, message: str) -> None:
        self.warnings += 1
        self.meter.reporter.log(f"{to_wire(path)}: {message}", "warning")

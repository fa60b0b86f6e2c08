"""Worker processes for backup and restore: started, connected and stopped the same way.

A worker is a plain interpreter (not ``multiprocessing``'s spawn, which re-imports the whole
command line in every worker and starts a resource-tracker process: ~20 MB more per worker)
that runs one module's ``run_worker`` on one end of a socket pair. ``-P`` keeps the current
directory, which may be the tree being backed up or restored into, off ``sys.path``. The
first message on the socket is the worker's setup, key material included: never argv or the
environment. A worker dies with its parent, and stops at end of file on its socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from roost import memory

if TYPE_CHECKING:  # the workers themselves never start processes: not imported there
    import subprocess

_PR_SET_PDEATHSIG = 1
_HEAD = struct.Struct("<QI")  # pickle length, number of out-of-band buffers
_SIZE = struct.Struct("<Q")
_KEEP_INBOX = 1024 * 1024  # a bigger receive buffer is dropped after use
# Out-of-band data (sealed segments) is received into the channel's own anonymous mapping,
# reused message after message: a new mapping per message was ~84,000 page faults (zeroed
# pages) and as many unmapped for the kernel tree's 330 MB of segments. Touched pages beyond
# _KEEP_OUT_OF_BAND (a segment part is 512 KiB: procreader.SEGMENT_PART) are given back by
# release_received().
_OUT_OF_BAND_SPACE = 16 * 1024 * 1024  # address space, at least (untouched pages are free)
_KEEP_OUT_OF_BAND = 640 * 1024


class Channel:
    """Pickled messages over one end of a socket pair (see the module docstring).

    Frame: ``_HEAD``, one ``_SIZE`` per out-of-band buffer, the pickle, the buffers. Sending
    is safe from one thread at a time, receiving from one thread at a time.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._inbox = bytearray(64 * 1024)
        self._out_of_band = memory.ReusedBuffers(_OUT_OF_BAND_SPACE, _KEEP_OUT_OF_BAND)
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    def poll(self) -> bool:
        """Whether a message (or the end of file) is waiting, without blocking."""
        return bool(select.select([self._fd], [], [], 0)[0])

    def send(self, message: object) -> None:
        buffers: list[pickle.PickleBuffer] = []
        body = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
        raws = [buffer.raw() for buffer in buffers]
        head = _HEAD.pack(len(body), len(raws)) + b"".join(_SIZE.pack(r.nbytes) for r in raws)
        _write_all(self._fd, [head, body, *raws])

    def recv(self) -> Any:
        """The next message; EOFError at a clean end of file, OSError in mid-message.

        Its out-of-band buffers are views of this channel's receive buffer: use them before
        the next ``recv``, and then call :meth:`release_received`.
        """
        head = self._read(_HEAD.size, first=True)
        length, count = _HEAD.unpack(head)
        sizes = [_SIZE.unpack(self._read(_SIZE.size))[0] for _ in range(count)]
        body = self._read(length)
        buffers = self._read_buffers(sizes)
        try:
            return pickle.loads(body, buffers=buffers)
        finally:
            body.release()
            if len(self._inbox) > _KEEP_INBOX:
                self._inbox = bytearray(64 * 1024)

    def _read(self, size: int, first: bool = False) -> memoryview:
        if len(self._inbox) < size:
            self._inbox = bytearray(size)
        view = memoryview(self._inbox)[:size]
        _read_into(self._fd, view, first)
        return view

    def release_received(self) -> None:
        """Give back what the last messages' out-of-band data touched beyond what is kept."""
        self._out_of_band.give_back()

    def _read_buffers(self, sizes: list[int]) -> list[memoryview]:
        """All of a message's out-of-band data, read into the channel's receive buffer (an
        anonymous mapping: a ``bytearray`` would be zero-filled first, megabytes per sealed
        segment while the receiving thread holds the GIL) and handed out in slices.
        """
        if not sizes:
            return []
        total = sum(sizes)
        whole = memoryview(self._out_of_band.get(total))[:total]
        _read_into(self._fd, whole, first=False)
        self._out_of_band.reach(total)
        views, start = [], 0
        for size in sizes:
            views.append(whole[start : start + size].toreadonly())
            start += size
        return views

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)


def _write_all(fd: int, parts: list[bytes | memoryview]) -> None:
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _read_into(fd: int, view: memoryview, first: bool) -> None:
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            if first and got == 0:
                raise EOFError
            raise OSError("the worker's socket closed in the middle of a message")
        got += n


_warm: dict[str, list[tuple[subprocess.Popen[bytes], Channel]]] = {}
_warm_lock = threading.Lock()


def prestart(module: str, count: int) -> None:
    """Start ``count`` workers of ``module`` now; :func:`spawn` hands them out later.

    A worker's interpreter takes ~0.1 s to start and import; started before the repository
    key is derived (which keeps the main process busy for about as long), it is ready when
    the first batch is. A prestarted worker waits for its setup; one never used exits at end
    of file on its socket, at the latest when this process exits (or :func:`discard_warm`).
    """
    for _ in range(count):
        try:
            started = _start(module)
        except OSError:  # e.g. the interpreter may not be executed: the backup says so later
            return
        with _warm_lock:
            _warm.setdefault(module, []).append(started)


def discard_warm() -> None:
    """Stop the prestarted workers nobody took."""
    with _warm_lock:
        pools = list(_warm.values())
        _warm.clear()
    for process, conn in (worker for pool in pools for worker in pool):
        process.kill()  # it holds nothing yet; waiting for it to finish importing costs time
        process.wait()
        conn.close()


def spawn(module: str, setup: object) -> tuple[subprocess.Popen[bytes], Channel]:
    """Start ``module.run_worker`` in a new interpreter (or take a prestarted one), set it up."""
    process, conn = _take_warm(module) or _start(module)
    conn.send((setup, os.getpid()))
    return process, conn


def _take_warm(module: str) -> tuple[subprocess.Popen[bytes], Channel] | None:
    with _warm_lock:
        pool = _warm.get(module, [])
        while pool:
            process, conn = pool.pop()
            if process.poll() is None:
                return process, conn
            conn.close()  # died while waiting (killed): start another
    return None


# glibc's allocator in a worker, set from its start (other C libraries ignore these). Its
# adaptive mmap threshold rose to the biggest buffer freed (an 8 MiB chunk), and the heap then
# kept up to twice that unused before giving any back: a worker's heap held 16-19 MiB at its
# peak. Fixed, allocations under 1 MiB (most of a batch's) still reuse the heap, bigger ones
# are mappings returned when freed, and more than 2 MiB free at the heap's top is given back.
# (A fixed 128 KiB threshold, as in the main process, made every batch's buffers new
# mappings: 0.45 s more system time per worker and kernel tree.)
WORKER_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(2 * 1024 * 1024),
}


def _start(module: str) -> tuple[subprocess.Popen[bytes], Channel]:
    import subprocess

    command = f"import sys; from {module} import run_worker; run_worker(sys.argv[1])"
    ours, theirs = socket.socketpair()
    with theirs:
        process = subprocess.Popen(
            [sys.executable, "-P", "-c", command, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env={**os.environ, **WORKER_MALLOC},
        )
    return process, Channel(ours.detach())


def connect(fd: str) -> tuple[Channel, Any]:
    """In the worker: its socket and setup, after arranging to die with the parent.

    A worker's allocator is set by :data:`WORKER_MALLOC`, in its environment.
    """
    conn = Channel(int(fd))
    memory.collect_less_often()  # for the worker's life (see memory.py)
    try:
        setup, parent = conn.recv()
    except EOFError:  # prestarted, and not needed after all
        os._exit(0)
    die_with_parent(parent)
    return conn, setup


def stop(process: subprocess.Popen[bytes], conn: Channel, timeout: float = 10.0) -> None:
    """Wait for the process to end (kill it after ``timeout``) and close its socket."""
    import subprocess

    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    conn.close()


def report_failure(conn: Channel, exc: BaseException) -> None:
    """Send ``("failed", exc)``, so the parent fails with the real cause."""
    with contextlib.suppress(Exception):
        conn.send(("failed", _portable(exc)))


def default_processes() -> int:
    """One worker per core (a third on 2 cores was not faster and cost ~40 MB more).

    None on Windows, where a socket cannot be handed to a child by descriptor: the same
    work then runs on threads.
    """
    if sys.platform == "win32":
        return 0
    return max(2, os.cpu_count() or 2)


def die_with_parent(parent: int) -> None:
    """A worker must not outlive its backup or restore (killed agent, SIGKILLed command)."""
    if sys.platform.startswith("linux"):
        try:
            if ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # other platforms: poll
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="roost-parent-watch").start()


def _portable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


__all__ = [
    "Channel",
    "connect",
    "default_processes",
    "die_with_parent",
    "discard_warm",
    "prestart",
    "report_failure",
    "spawn",
    "stop",
]

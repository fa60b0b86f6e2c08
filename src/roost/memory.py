"""Process-wide allocator settings that keep a backup's memory bounded.

glibc raises its mmap threshold dynamically each time a large block is freed, up to 32 MiB,
so after the first chunks and packs are freed, later multi-megabyte buffers come from thread
arenas and stay mapped after they are freed. Backups allocate exactly such buffers (chunks
up to 8 MiB, packs of 16 MiB) in several threads. A fixed threshold returns them to the OS at
once; measured on an 845 MB tree, peak RSS went from 211 MB to 148 MB at the same speed.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator(mmap_threshold: int = 128 * 1024, arenas: int = 2) -> bool:
    """Apply the settings where glibc is present; return whether they were applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: keep its defaults
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    return bool(libc.mallopt(_M_ARENA_MAX, arenas) == 1 and ok)


COLLECT_AFTER = 50_000  # net new container objects between two young collections


_fewer_lock = threading.Lock()
_fewer_users = 0
_thresholds_before: tuple[int, int, int] = gc.get_threshold()


def collect_less_often() -> None:
    """Set the thresholds of :func:`fewer_collections` for the rest of the process's life."""
    gc.set_threshold(COLLECT_AFTER, 20, 100)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector after 50,000 net new objects instead of 700.

    A backup's hot paths make no reference cycles (the one they had is broken on purpose,
    see walker.py), so every collection only traversed objects that were still alive: in a
    full backup of the kernel tree 540 collections took 0.28-0.32 s of the main process's
    ~3 s of CPU; with this threshold, 1 collection and 0.03 s. Cyclic garbage (exceptions
    with their tracebacks) is still collected, after at most 50,000 objects. The previous
    thresholds come back when the last backup or restore running in the process ends (an
    agent may run them side by side, and is long-running).
    """
    global _fewer_users, _thresholds_before
    with _fewer_lock:
        if _fewer_users == 0:
            _thresholds_before = gc.get_threshold()
            collect_less_often()
        _fewer_users += 1
    try:
        yield
    finally:
        with _fewer_lock:
            _fewer_users -= 1
            if _fewer_users == 0:
                gc.set_threshold(*_thresholds_before)


def freeze_imported() -> None:
    """Keep the garbage collector from traversing what the imports made, again and again.

    Modules, classes and functions live until exit, yet every full collection during a
    backup traversed them all; moved to the permanent generation they are skipped. Measured
    on a no-change backup of the kernel tree: full collections 95 -> 60 ms.
    """
    gc.freeze()


def skip_exit_collection() -> None:
    """Let the interpreter exit without a last garbage collection over every live object.

    At exit Python collects garbage once more, traversing everything still alive: after a
    backup that is the index of the repository (a few hundred thousand objects for 80,000
    blobs) and took 50-150 ms of every run. Freezing moves those objects out of the
    collector's sight. Python never promised finalizers for objects alive at exit, and Roost
    closes its files and pools explicitly, so nothing that ran before is lost.
    """
    gc.freeze()


def anonymous_buffer(size: int) -> mmap.mmap:
    """A private anonymous mapping of ``size`` bytes, for a buffer reused again and again.

    Unlike a ``bytearray``, which zero-fills all of itself, its pages cost memory only once
    they are touched, and :func:`give_back` returns them.
    """
    if sys.platform == "win32":
        return mmap.mmap(-1, size)
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)


def give_back(buffer: mmap.mmap, keep: int) -> None:
    """Return the pages of ``buffer`` beyond its first ``keep`` bytes to the system.

    They read as zeros afterwards, and cost memory again only when written. Where the
    platform has no ``madvise`` (Windows) the buffer keeps its pages.
    """
    if hasattr(mmap, "MADV_DONTNEED") and len(buffer) > keep:
        buffer.madvise(mmap.MADV_DONTNEED, keep, len(buffer) - keep)


class ReusedBuffers:
    """One :func:`anonymous_buffer` per thread, reused use after use.

    A buffer grows (to at least ``minimum`` bytes of address space) when a use needs more;
    after a use, :meth:`give_back` returns what it touched beyond ``keep`` bytes, so between
    uses a thread holds at most ``keep``. The reading threads' blocks, a scan worker's sealed
    segments and the main process's encrypted parts each use one.
    """

    def __init__(self, minimum: int, keep: int) -> None:
        self._local = threading.local()
        self._minimum = minimum
        self._keep = keep

    def get(self, capacity: int) -> mmap.mmap:
        """This thread's buffer, at least ``capacity`` bytes (a new one if it was smaller)."""
        buffer: mmap.mmap | None = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < capacity:
            buffer = self._local.buffer = anonymous_buffer(max(capacity, self._minimum))
            self._local.reached = 0
        return buffer

    def reach(self, end: int) -> None:
        """Note that this thread's buffer was written up to ``end``."""
        self._local.reached = max(self._local.reached, end)

    def give_back(self) -> None:
        """Return what this thread's buffer touched beyond ``keep``; call after a use."""
        buffer: mmap.mmap | None = getattr(self._local, "buffer", None)
        if buffer is not None and self._local.reached > self._keep:
            give_back(buffer, self._keep)
            self._local.reached = 0

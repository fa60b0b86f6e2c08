"""A small cache of read-only file descriptors for immutable objects.

A restore reads thousands of blobs from the same few packs; opening the pack for each blob
cost more than reading it (openat dominated restore time in strace). Objects are immutable,
so a cached descriptor always reads the right bytes; one of a deleted object still reads the
old, identical content, which is harmless. Descriptors are reference-counted so an evicted
one is closed only when its last reader is done.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager


class _Entry:
    __slots__ = ("closed", "fd", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 0
        self.closed = False


class FdCache:
    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def open(self, path: str) -> Iterator[int]:
        """Yield a descriptor for ``path`` (opened on first use), safe to pread from."""
        entry = self._acquire(path)
        try:
            yield entry.fd
        finally:
            self._release(entry)

    def _acquire(self, path: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None:
                self._entries.move_to_end(path)
                entry.users += 1
                return entry
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # outside the lock: it may block
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                entry = self._entries[path] = _Entry(fd)
                self._evict()
            else:
                os.close(fd)  # another thread opened it meanwhile
            entry.users += 1
            return entry

    def _evict(self) -> None:
        while len(self._entries) > self._capacity:
            _, old = self._entries.popitem(last=False)
            old.closed = True
            if old.users == 0:
                os.close(old.fd)

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.users -= 1
            if entry.closed and entry.users == 0:
                os.close(entry.fd)

    def forget(self, path: str) -> None:
        """Drop the cached descriptor of a deleted object."""
        with self._lock:
            entry = self._entries.pop(path, None)
            if entry is not None:
                entry.closed = True
                if entry.users == 0:
                    os.close(entry.fd)

    def close(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                entry.closed = True
                if entry.users == 0:
                    os.close(entry.fd)
            self._entries.clear()

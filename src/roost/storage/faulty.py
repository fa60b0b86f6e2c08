"""A test double that wraps a backend and injects failures, method by method.

faulty = FaultyBackend(MemoryBackend())
faulty.fail_next("put", times=2)                 # the next two puts raise StorageError
faulty.fail_next("put", after=True)              # the put lands, then "the network drops"
faulty.fail_after("put", 10)                     # the 11th put and every later one fail
faulty.corrupt_on_get(lambda k: k.startswith("data/"))
faulty.calls["put"]                              # every call counts, failed ones too

``put_file`` is a put here: "put" faults fire on it and it counts in ``calls["put"]`` (and
in ``calls["put_file"]``), so a test that fails stores fails the packs a backup stores from
spool files as well as the index and snapshot it stores from memory.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from roost.errors import StorageError
from roost.storage.base import Backend, ObjectInfo

T = TypeVar("T")

METHODS = frozenset({"put", "get", "get_range", "stat", "list", "delete"})


@dataclass(frozen=True, slots=True)
class _Fault:
    exc: Exception
    after: bool  # run the real call first, then raise: the caller cannot know it happened


class FaultyBackend:
    """Wraps ``inner``; healthy until told otherwise."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._queued: dict[str, deque[_Fault]] = {}
        self._crash_after: dict[str, int] = {}
        self._successes: Counter[str] = Counter()
        self._corrupt: Callable[[str], bool] | None = None
        self.calls: Counter[str] = Counter()

    @property
    def inner(self) -> Backend:
        return self._inner

    def fail_next(
        self, method: str, times: int = 1, exc: Exception | None = None, *, after: bool = False
    ) -> None:
        """Make the next ``times`` calls of ``method`` raise ``exc`` (default StorageError).

        With ``after=True`` the call reaches the inner backend first, as when a response is
        lost after the server acted.
        """
        _check_method(method)
        fault = _Fault(exc or StorageError(f"injected failure in {method}"), after)
        with self._lock:
            self._queued.setdefault(method, deque()).extend([fault] * times)

    def fail_after(self, method: str, n_calls: int) -> None:
        """Let ``n_calls`` more calls of ``method`` succeed, then fail every one (a crash)."""
        _check_method(method)
        with self._lock:
            self._crash_after[method] = n_calls
            self._successes[method] = 0

    def corrupt_on_get(self, key_predicate: Callable[[str], bool]) -> None:
        """Flip one byte of data returned by get/get_range for keys matching the predicate."""
        self._corrupt = key_predicate

    def heal(self) -> None:
        """Remove every injected fault (call counts are kept)."""
        with self._lock:
            self._queued.clear()
            self._crash_after.clear()
            self._corrupt = None

    def describe(self) -> str:
        return f"faulty({self._inner.describe()})"

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        self._run("put", lambda: self._inner.put(key, data, overwrite=overwrite))

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        with self._lock:
            self.calls["put_file"] += 1
        self._run("put", lambda: self._inner.put_file(key, file, size, overwrite=overwrite))

    def spool_dir(self) -> str | None:
        return self._inner.spool_dir()

    def get(self, key: str) -> bytes:
        return self._maybe_corrupt(key, self._run("get", lambda: self._inner.get(key)))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        data = self._run("get_range", lambda: self._inner.get_range(key, offset, length))
        return self._maybe_corrupt(key, data)

    def stat(self, key: str) -> ObjectInfo:
        return self._run("stat", lambda: self._inner.stat(key))

    def delete(self, key: str) -> None:
        self._run("delete", lambda: self._inner.delete(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Faults fire when list is called, not midway through iteration.
        return iter(self._run("list", lambda: list(self._inner.list(prefix))))

    def _run(self, method: str, op: Callable[[], T]) -> T:
        fault = self._take_fault(method)
        if fault is not None and not fault.after:
            raise fault.exc
        result = op()
        if fault is not None:
            raise fault.exc
        return result

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            self.calls[method] += 1
            queue = self._queued.get(method)
            if queue:
                return queue.popleft()
            limit = self._crash_after.get(method)
            if limit is not None:
                if self._successes[method] >= limit:
                    return _Fault(StorageError(f"injected crash in {method}"), after=False)
                self._successes[method] += 1
        return None

    def _maybe_corrupt(self, key: str, data: bytes) -> bytes:
        if self._corrupt is None or not data or not self._corrupt(key):
            return data
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF
        return bytes(flipped)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown backend method {method!r}; one of {sorted(METHODS)}")

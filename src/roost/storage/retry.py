"""Retry transient storage failures so one dropped connection does not fail a backup.

Only plain :class:`StorageError` is retried: ``ObjectNotFound`` and ``ObjectExists`` are
answers, not failures. Because objects are content-addressed, a put that failed ambiguously
(the write may have landed before the connection dropped) and then finds the object present
with the same size has succeeded; likewise a retried delete that finds the object gone.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage.base import Backend, ObjectInfo

T = TypeVar("T")

log = logging.getLogger(__name__)


class RetryingBackend:
    """Wraps ``inner``; each operation is tried up to ``attempts`` times."""

    def __init__(
        self,
        inner: Backend,
        attempts: int = 5,
        base_delay: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        *,
        max_delay: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._inner = inner
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random()

    @property
    def inner(self) -> Backend:
        return self._inner

    def describe(self) -> str:
        return self._inner.describe()

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        self._put(key, len(data), lambda: self._inner.put(key, data, overwrite=overwrite))

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        def store() -> None:
            file.seek(0)  # a failed attempt may have read part of it
            self._inner.put_file(key, file, size, overwrite=overwrite)

        self._put(key, size, store)

    def spool_dir(self) -> str | None:
        return self._inner.spool_dir()

    def _put(self, key: str, size: int, store: Callable[[], None]) -> None:
        ambiguous = False

        def attempt() -> None:
            nonlocal ambiguous
            try:
                store()
            except ObjectExists:
                if not (ambiguous and self._has_size(key, size)):
                    raise
                log.info("%s: earlier attempt had stored it", key)
            except StorageError:
                ambiguous = True
                raise

        self._retry(f"put {key}", attempt)

    def get(self, key: str) -> bytes:
        return self._retry(f"get {key}", lambda: self._inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._retry(f"get {key}", lambda: self._inner.get_range(key, offset, length))

    def stat(self, key: str) -> ObjectInfo:
        return self._retry(f"stat {key}", lambda: self._inner.stat(key))

    def delete(self, key: str) -> None:
        ambiguous = False

        def attempt() -> None:
            nonlocal ambiguous
            try:
                self._inner.delete(key)
            except ObjectNotFound:
                if not ambiguous:
                    raise
            except StorageError:
                ambiguous = True
                raise

        self._retry(f"delete {key}", attempt)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Collected in full inside the retry: restarting a half-consumed listing would yield
        # duplicates to the caller.
        found = self._retry(f"list {prefix!r}", lambda: list(self._inner.list(prefix)))
        return iter(found)

    def _has_size(self, key: str, size: int) -> bool:
        try:
            return self._inner.stat(key).size == size
        except ObjectNotFound:
            return False

    def _retry(self, what: str, op: Callable[[], T]) -> T:
        for attempt in range(1, self._attempts + 1):
            try:
                return op()
            except (ObjectNotFound, ObjectExists):
                raise
            except StorageError as exc:
                if attempt == self._attempts:
                    raise
                delay = self._delay(attempt)
                log.warning(
                    "%s on %s failed (%s); retry %d of %d in %.1fs",
                    what,
                    self.describe(),
                    exc,
                    attempt,
                    self._attempts - 1,
                    delay,
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter in [50%, 100%] so clients do not retry in step."""
        ceiling = min(self._max_delay, self._base_delay * 2.0 ** (attempt - 1))
        return ceiling * self._rng.uniform(0.5, 1.0)

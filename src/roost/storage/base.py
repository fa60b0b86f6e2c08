"""The one small interface every storage backend implements.

Keys are '/'-separated relative names such as ``data/ab/ab12...``. Objects are immutable:
``put`` never replaces an existing object unless the caller asks for it (only leases do).
Backends translate their native errors into :mod:`roost.errors` exceptions once, here at the
I/O boundary, so the engine sees ``ObjectNotFound`` / ``ObjectExists`` / ``StorageError`` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


@runtime_checkable
class Backend(Protocol):
    """Object storage as the engine needs it."""

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        """Store ``data`` under ``key`` atomically: readers see all of it or nothing.

        Raises ObjectExists when the key exists and ``overwrite`` is false.
        """
        ...

    def get(self, key: str) -> bytes:
        """Return the whole object; ObjectNotFound if absent."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` (fewer only at the end of the object)."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Return the object's size; ObjectNotFound if absent."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix`` (in no particular order)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; ObjectNotFound if absent."""
        ...

    def describe(self) -> str:
        """A human-readable location for messages (a path or URL, never credentials)."""
        ...

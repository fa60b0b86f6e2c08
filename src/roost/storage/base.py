"""The one small interface every storage backend implements.

Keys are '/'-separated relative names such as ``data/ab/ab12...``. Objects are immutable:
``put`` never replaces an existing object unless the caller asks for it (only leases do).
Backends translate their native errors into :mod:`roost.errors` exceptions once, here at the
I/O boundary, so the engine sees ``ObjectNotFound`` / ``ObjectExists`` / ``StorageError`` only.

Packs are stored from files (``put_file``), not from memory: a backup writes each pack to a
spool file (see spool.py) placed where ``spool_dir`` says, so that a local repository can
publish it with a link instead of a copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable


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

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        """Store the content of ``file`` (exactly ``size`` bytes) as :meth:`put` stores data.

        ``file`` is a readable, seekable binary file; it is read from its start (again on a
        retry) with a bounded buffer, never whole. The caller keeps and closes it, and must
        not change it once stored: an unnamed spool file in :meth:`spool_dir` may become the
        stored object itself (a link, no copy). ValueError if the file's size is not ``size``.
        """
        ...

    def spool_dir(self) -> str | None:
        """Where to create spool files for :meth:`put_file` so they are stored without a copy.

        A directory on the objects' file system, or None (use the system's temp directory).
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

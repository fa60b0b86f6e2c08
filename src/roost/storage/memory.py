"""An in-process backend with the exact semantics of the others, for fast tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import BinaryIO

from roost.errors import ObjectExists, ObjectNotFound
from roost.storage.base import ObjectInfo
from roost.storage.local import check_range, validate_key, validate_prefix
from roost.storage.spool import check_size, read_whole


class MemoryBackend:
    """Objects in a dict guarded by a lock; nothing survives the process."""

    def __init__(self, name: str = "") -> None:
        self._name = name
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"memory://{self._name}"

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        validate_key(key)
        # bytes() copies a bytearray/memoryview so later mutation by the caller cannot
        # change a stored object, as it could not on a real backend.
        blob = bytes(data)
        with self._lock:
            if not overwrite and key in self._objects:
                raise ObjectExists(f"{self._where(key)} already exists")
            self._objects[key] = blob

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        validate_key(key)
        check_size(file, size)
        self.put(key, read_whole(file, size), overwrite=overwrite)

    def spool_dir(self) -> str | None:
        return None  # objects live in memory: any temp directory will do

    def get(self, key: str) -> bytes:
        return self._lookup(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        check_range(offset, length)
        return self._lookup(key)[offset : offset + length]

    def stat(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, len(self._lookup(key)))

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            if self._objects.pop(key, None) is None:
                raise ObjectNotFound(f"{self._where(key)} does not exist")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        # Snapshot under the lock so callers may put/delete while iterating.
        with self._lock:
            found = [
                ObjectInfo(k, len(v)) for k, v in self._objects.items() if k.startswith(prefix)
            ]
        return iter(found)

    def _lookup(self, key: str) -> bytes:
        validate_key(key)
        with self._lock:
            blob = self._objects.get(key)
        if blob is None:
            raise ObjectNotFound(f"{self._where(key)} does not exist")
        return blob

    def _where(self, key: str) -> str:
        return f"{self.describe()}/{key}" if self._name else f"memory:{key}"

"""A backend seen through a key prefix: each organisation's repository lives in ``orgs/<id>/``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from roost.storage.base import Backend, ObjectInfo
from roost.storage.local import validate_key, validate_prefix


class PrefixedBackend:
    """Implements :class:`roost.storage.base.Backend` on ``inner`` under ``prefix``."""

    def __init__(self, inner: Backend, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"storage prefix {prefix!r} must end with '/'")
        validate_prefix(prefix)
        self.inner = inner
        self.prefix = prefix

    def _full(self, key: str) -> str:
        # Checked here too: a key such as '../x' must never reach another organisation.
        validate_key(key)
        return self.prefix + key

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        self.inner.put(self._full(key), data, overwrite=overwrite)

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        self.inner.put_file(self._full(key), file, size, overwrite=overwrite)

    def spool_dir(self) -> str | None:
        return self.inner.spool_dir()

    def get(self, key: str) -> bytes:
        return self.inner.get(self._full(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(self._full(key), offset, length)

    def stat(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, self.inner.stat(self._full(key)).size)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        cut = len(self.prefix)
        return (ObjectInfo(o.key[cut:], o.size) for o in self.inner.list(self.prefix + prefix))

    def delete(self, key: str) -> None:
        self.inner.delete(self._full(key))

    def describe(self) -> str:
        return f"{self.inner.describe().rstrip('/')}/{self.prefix.rstrip('/')}"

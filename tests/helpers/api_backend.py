"""A storage Backend that speaks the server's data API through a test client, so the real
engine (archiver, index, leases) runs against the server exactly as an agent's would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from fastapi.testclient import TestClient

from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage.base import ObjectInfo
from roost.storage.spool import check_size, read_whole

BASE = "/api/v1/agent/storage"


class ApiBackend:
    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    def _check(self, status: int, key: str, text: str) -> None:
        if status == 404:
            raise ObjectNotFound(f"{key} does not exist")
        if status == 412:
            raise ObjectExists(f"{key} exists")
        if status >= 400:
            raise StorageError(f"{key}: {status} {text}")

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        headers = {**self.headers, **({"X-Roost-Overwrite": "1"} if overwrite else {})}
        reply = self.client.put(f"{BASE}/{key}", content=bytes(data), headers=headers)
        self._check(reply.status_code, key, reply.text)

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        check_size(file, size)
        self.put(key, read_whole(file, size), overwrite=overwrite)  # the test client wants bytes

    def spool_dir(self) -> str | None:
        return None

    def get(self, key: str) -> bytes:
        reply = self.client.get(f"{BASE}/{key}", headers=self.headers)
        self._check(reply.status_code, key, reply.text)
        return bytes(reply.content)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        headers = {**self.headers, "Range": f"bytes={offset}-{offset + length - 1}"}
        reply = self.client.get(f"{BASE}/{key}", headers=headers)
        self._check(reply.status_code, key, reply.text)
        return bytes(reply.content)

    def stat(self, key: str) -> ObjectInfo:
        reply = self.client.head(f"{BASE}/{key}", headers=self.headers)
        self._check(reply.status_code, key, "")
        return ObjectInfo(key, int(reply.headers["content-length"]))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        reply = self.client.get(BASE, params={"prefix": prefix}, headers=self.headers)
        self._check(reply.status_code, prefix, reply.text)
        return iter([ObjectInfo(o["key"], o["size"]) for o in reply.json()])

    def delete(self, key: str) -> None:
        reply = self.client.delete(f"{BASE}/{key}", headers=self.headers)
        self._check(reply.status_code, key, reply.text)

    def describe(self) -> str:
        return "roost server data API"

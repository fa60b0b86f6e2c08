"""The repository's storage as the agent sees it: the server's data API, never the bucket.

Agents hold no storage credentials (DESIGN.md §3). ``RemoteBackend`` implements
:class:`roost.storage.base.Backend` over the routes of ``roost.protocol.agent_api``::

    GET    /storage?prefix=P   list            HEAD /storage/{key}  stat (Content-Length)
    GET    /storage/{key}      get, or a range ("Range: bytes=a-b", 206; 416 past the end)
    PUT    /storage/{key}      201; 412 when it exists ("X-Roost-Overwrite: 1" for leases/)
    DELETE /storage/{key}      204; 404; leases/ only

``put_file`` streams the file as the PUT body (with its Content-Length) in pieces, so a pack is
never in the agent's memory whole; a retry reads the file again from its start. Status codes
are translated once, here: 404 -> ObjectNotFound, 412 -> ObjectExists, anything
else -> StorageError with the server's message. Keys are validated before they become URLs,
because URL normalisation would quietly turn ``data/../x`` into ``x``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO
from urllib.parse import quote

import httpx

from roost.agent.api import describe_transport_error, error_detail
from roost.agent.throttle import CHUNK, RateLimiter
from roost.agent.write_behind import OnAccepted, WriteBehindBackend
from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage.base import Backend, ObjectInfo
from roost.storage.local import check_range, validate_key, validate_prefix
from roost.storage.retry import RetryingBackend
from roost.storage.spool import COPY_CHUNK, check_size, pieces

OVERWRITE_HEADER = "X-Roost-Overwrite"


class RemoteBackend:
    def __init__(
        self,
        client: httpx.Client,
        base_url: str,
        *,
        limiter: RateLimiter | None = None,
        on_send: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/") + "/storage"
        self._limiter = limiter
        # Called with the size of every piece of a body before it is sent; it may raise to
        # abort the upload (a cancelled job), and it keeps progress alive during uploads.
        self._on_send = on_send

    def describe(self) -> str:
        return self._base

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        validate_key(key)
        self._put(key, self._body(bytes(data)), len(data), overwrite)

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        validate_key(key)
        check_size(file, size)
        hooked = self._limiter is not None or self._on_send is not None
        body = pieces(file, size, CHUNK if hooked else COPY_CHUNK)
        self._put(key, self._hooked(body) if hooked else body, size, overwrite)

    def spool_dir(self) -> str | None:
        return None  # the server stores what it is sent: a local temp directory is best

    def _put(self, key: str, body: bytes | Iterator[bytes], size: int, overwrite: bool) -> None:
        # Content-Length also keeps httpx from sending an iterator chunked
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        if overwrite:
            headers[OVERWRITE_HEADER] = "1"
        response = self._send("PUT", key, content=body, headers=headers)
        if response.status_code == 412:
            raise ObjectExists(f"{self._where(key)} already exists")
        self._check(response, "store", key, ok=(200, 201, 204))

    def get(self, key: str) -> bytes:
        validate_key(key)
        response = self._send("GET", key)
        self._check(response, "read", key, ok=(200,))
        return response.content

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        check_range(offset, length)
        validate_key(key)
        if length == 0:
            self.stat(key)  # an empty range of a missing object is still ObjectNotFound
            return b""
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        response = self._send("GET", key, headers=headers)
        if response.status_code == 416:
            return b""  # the range starts at or past the end of an existing object
        self._check(response, "read", key, ok=(200, 206))
        if response.status_code == 200:  # the server ignored the Range header
            return response.content[offset : offset + length]
        return response.content[:length]

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        response = self._send("HEAD", key)
        self._check(response, "stat", key, ok=(200,))
        try:
            return ObjectInfo(key, int(response.headers["Content-Length"]))
        except (KeyError, ValueError):
            raise StorageError(f"the server sent no size for {self._where(key)}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        response = self._request("GET", self._base, "list", prefix, params={"prefix": prefix})
        self._check(response, "list", prefix, ok=(200,))
        try:
            items = response.json()
            found = [ObjectInfo(str(item["key"]), int(item["size"])) for item in items]
        except (ValueError, KeyError, TypeError):
            raise StorageError(f"the server's listing of {prefix!r} is malformed") from None
        return iter(found)

    def delete(self, key: str) -> None:
        validate_key(key)
        response = self._send("DELETE", key)
        self._check(response, "delete", key, ok=(200, 204))

    # -- plumbing -------------------------------------------------------------------------

    def _body(self, data: bytes) -> bytes | Iterator[bytes]:
        if not data or (self._limiter is None and self._on_send is None):
            return data
        view = memoryview(data)
        return self._hooked(bytes(view[at : at + CHUNK]) for at in range(0, len(view), CHUNK))

    def _hooked(self, body: Iterable[bytes]) -> Iterator[bytes]:
        """The pieces of a body, each reported and paced before it is sent."""
        for piece in body:
            if self._on_send is not None:
                self._on_send(len(piece))
            if self._limiter is not None:
                self._limiter.acquire(len(piece))
            yield piece

    def _send(
        self,
        method: str,
        key: str,
        *,
        content: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = f"{self._base}/{quote(key, safe='/')}"
        return self._request(method, url, "access", key, content=content, headers=headers)

    def _request(
        self,
        method: str,
        url: str,
        what: str,
        key: str,
        *,
        content: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return self._client.request(
                method, url, content=content, headers=headers, params=params
            )
        except httpx.TransportError as exc:
            raise StorageError(
                f"cannot {what} {self._where(key)}: {describe_transport_error(exc)}"
            ) from exc

    def _check(self, response: httpx.Response, what: str, key: str, ok: tuple[int, ...]) -> None:
        status = response.status_code
        if status in ok:
            return
        if status == 404:
            raise ObjectNotFound(f"{self._where(key)} does not exist")
        raise StorageError(
            f"the server refused to {what} {self._where(key)} "
            f"(HTTP {status}): {error_detail(response)}"
        )

    def _where(self, key: str) -> str:
        return f"{self._base}/{key}"


def remote_storage(
    client: httpx.Client,
    base_url: str,
    *,
    bandwidth_limit: int | None = None,
    retry_attempts: int = 5,
    retry_sleep: Callable[[float], None] = time.sleep,
    on_send: Callable[[int], None] | None = None,
    on_pack_accepted: OnAccepted | None = None,
) -> Backend:
    """The backend a job uses: the data API, rate limited if asked, retried on failures,
    packs uploaded in the background (see write_behind.py, also for ``on_pack_accepted``)."""
    limiter = RateLimiter(bandwidth_limit) if bandwidth_limit else None
    inner = RemoteBackend(client, base_url, limiter=limiter, on_send=on_send)
    retrying = RetryingBackend(inner, attempts=retry_attempts, sleep=retry_sleep)
    return WriteBehindBackend(retrying, on_accepted=on_pack_accepted)

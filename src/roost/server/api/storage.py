"""The data API: agents read and write the organisation repository through the server.

Agents never hold storage credentials. Keys are checked with the same rules every backend
uses; writes go only where a backup writes (packs, index, snapshots, leases), objects are
never replaced (412), and only leases may be deleted or overwritten.
"""

from __future__ import annotations

import re
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Header, Request, Response, status
from starlette.concurrency import run_in_threadpool

from roost.errors import ObjectExists, StorageError
from roost.protocol.agent_api import StorageObject
from roost.server.api.deps import AgentDep, StateDep
from roost.server.errors import (
    ApiError,
    PayloadTooLarge,
    PermissionDenied,
    PreconditionFailed,
    RangeNotSatisfiable,
)
from roost.storage.local import validate_key, validate_prefix
from roost.storage.spool import open_spool

router = APIRouter(prefix="/agent/storage", tags=["storage"])

WRITABLE = ("data/", "index/", "snapshots/", "leases/")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
WRITE_BEHIND = 1024 * 1024  # body bytes gathered before one write to the spool file


def _key(key: str) -> str:
    try:
        validate_key(key)
    except StorageError as exc:
        raise ApiError(str(exc)) from None
    return key


@router.get("")
def list_objects(state: StateDep, agent: AgentDep, prefix: str = "") -> list[StorageObject]:
    try:
        validate_prefix(prefix)
    except StorageError as exc:
        raise ApiError(str(exc)) from None
    backend = state.repos.backend(agent.org_id)
    return [StorageObject(key=o.key, size=o.size) for o in backend.list(prefix)]


@router.head("/{key:path}")
def head_object(key: str, state: StateDep, agent: AgentDep) -> Response:
    info = state.repos.backend(agent.org_id).stat(_key(key))
    return Response(headers={"Content-Length": str(info.size), "Accept-Ranges": "bytes"})


@router.get("/{key:path}")
def get_object(
    key: str,
    state: StateDep,
    agent: AgentDep,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    backend = state.repos.backend(agent.org_id)
    key = _key(key)
    if range_header is None:
        return Response(backend.get(key), media_type="application/octet-stream")
    size = backend.stat(key).size
    first, last = _parse_range(range_header, size)
    data = backend.get_range(key, first, last - first + 1)
    return Response(
        data,
        status_code=status.HTTP_206_PARTIAL_CONTENT,
        media_type="application/octet-stream",
        headers={"Content-Range": f"bytes {first}-{first + len(data) - 1}/{size}"},
    )


def _parse_range(header: str, size: int) -> tuple[int, int]:
    """(first, last) inclusive, from ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n``."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or not (match[1] or match[2]):
        raise ApiError(f"unsupported Range {header!r}: send one range such as bytes=0-1023")
    if not match[1]:
        first, last = max(size - int(match[2]), 0), size - 1
    else:
        first = int(match[1])
        last = min(int(match[2]), size - 1) if match[2] else size - 1
    if first >= size:
        raise RangeNotSatisfiable(f"Range {header!r} starts past the object's {size} bytes")
    if first > last:
        raise ApiError(f"Range {header!r} ends before it starts")
    return first, last


@router.put("/{key:path}", status_code=status.HTTP_201_CREATED)
async def put_object(
    key: str,
    request: Request,
    state: StateDep,
    agent: AgentDep,
    overwrite: Annotated[str | None, Header(alias="X-Roost-Overwrite")] = None,
) -> Response:
    key = _key(key)
    if not key.startswith(WRITABLE):
        raise PermissionDenied(f"agents may write only under {', '.join(WRITABLE)}; not {key}")
    replace = overwrite == "1"
    if replace and not key.startswith("leases/"):
        raise PermissionDenied("only leases/ objects may be overwritten; objects are immutable")
    backend = state.repos.backend(agent.org_id)
    # The body goes to a spool file as it arrives, which a local repository then names
    # instead of copying it (storage/spool.py): a 16 MiB pack is never held in memory, nor
    # joined from its pieces, however many agents upload at once.
    try:
        with open_spool(backend.spool_dir()) as spool:
            size = await _receive_into(request, spool, state.settings.max_upload_bytes)
            try:
                await run_in_threadpool(backend.put_file, key, spool, size, overwrite=replace)
            except ObjectExists:
                message = f"{key} already exists; objects are never replaced"
                raise PreconditionFailed(message) from None
    except OSError as exc:  # the spool file: a full or failing disk (the agent retries)
        reason = exc.strerror or str(exc)
        raise StorageError(f"the server cannot hold the upload of {key}: {reason}") from exc
    return Response(status_code=status.HTTP_201_CREATED)


async def _receive_into(request: Request, spool: BinaryIO, limit: int) -> int:
    """Write the request's body into ``spool``, in writes of WRITE_BEHIND bytes on a thread
    (a write may wait for the disk: never on the event loop); returns its size."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"uploads are limited to {limit} bytes; this one is {declared}")
    pending: list[bytes] = []
    pending_size = size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"uploads are limited to {limit} bytes")
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= WRITE_BEHIND:
            await run_in_threadpool(spool.writelines, pending)
            pending, pending_size = [], 0
    await run_in_threadpool(spool.writelines, pending)
    spool.flush()
    return size


@router.delete("/{key:path}", status_code=status.HTTP_204_NO_CONTENT)
def delete_object(key: str, state: StateDep, agent: AgentDep) -> None:
    key = _key(key)
    if not key.startswith("leases/"):
        raise PermissionDenied(f"agents may delete only leases/ objects, not {key}")
    state.repos.backend(agent.org_id).delete(key)

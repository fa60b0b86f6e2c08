"""The agents' data API, mapped onto the organisation's prefix of the server's storage."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from tests.helpers.server import Harness, make_settings, running_server

from roost.server.api import storage as storage_api
from roost.server.api.storage import WRITE_BEHIND
from roost.server.orgrepo import org_prefix

PACK = "data/ab/" + "ab" * 32


@pytest.fixture
def agent(server: Harness) -> tuple[Harness, dict[str, str]]:
    return server, server.enroll("fs1")


def test_round_trip(agent: tuple[Harness, dict[str, str]]) -> None:
    server, headers = agent
    data = bytes(range(256)) * 40
    url = f"/api/v1/agent/storage/{PACK}"
    assert server.client.put(url, content=data, headers=headers).status_code == 201
    again = server.client.put(url, content=b"other", headers=headers)
    assert again.status_code == 412
    assert server.client.get(url, headers=headers).content == data
    part = server.client.get(url, headers={**headers, "Range": "bytes=100-199"})
    assert (part.status_code, part.content) == (206, data[100:200])
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = server.client.get(url, headers={**headers, "Range": "bytes=-10"})
    assert tail.content == data[-10:]
    head = server.client.head(url, headers=headers)
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(data)))
    listed = server.client.get("/api/v1/agent/storage?prefix=data/", headers=headers).json()
    assert listed == [{"key": PACK, "size": len(data)}]
    # Stored under the organisation's prefix, exactly as sent.
    inner = server.state.repos.storage
    assert inner.get(org_prefix(server.state.org_id) + PACK) == data


def test_missing_objects_are_404(agent: tuple[Harness, dict[str, str]]) -> None:
    server, headers = agent
    url = "/api/v1/agent/storage/index/" + "00" * 32
    assert server.client.get(url, headers=headers).status_code == 404
    assert server.client.head(url, headers=headers).status_code == 404


def test_only_leases_may_be_deleted_or_overwritten(agent: tuple[Harness, dict[str, str]]) -> None:
    server, headers = agent
    server.client.put(f"/api/v1/agent/storage/{PACK}", content=b"x", headers=headers)
    reply = server.client.delete(f"/api/v1/agent/storage/{PACK}", headers=headers)
    assert (reply.status_code, reply.json()["detail"]) == (
        403,
        f"agents may delete only leases/ objects, not {PACK}",
    )
    overwrite = {**headers, "X-Roost-Overwrite": "1"}
    reply = server.client.put(f"/api/v1/agent/storage/{PACK}", content=b"y", headers=overwrite)
    assert reply.status_code == 403
    lease = "/api/v1/agent/storage/leases/abc"
    assert server.client.put(lease, content=b"1", headers=headers).status_code == 201
    assert server.client.put(lease, content=b"2", headers=overwrite).status_code == 201
    assert server.client.get(lease, headers=headers).content == b"2"
    assert server.client.delete(lease, headers=headers).status_code == 204
    assert server.client.delete(lease, headers=headers).status_code == 404


def test_keys_and_config_cannot_be_written(agent: tuple[Harness, dict[str, str]]) -> None:
    server, headers = agent
    for key in ("config", "keys/evil"):
        reply = server.client.put(f"/api/v1/agent/storage/{key}", content=b"x", headers=headers)
        assert reply.status_code == 403
    # but the key files can be read (the agent gets the key from /repository anyway)
    listed = server.client.get("/api/v1/agent/storage?prefix=keys/", headers=headers).json()
    assert len(listed) == 2  # passphrase and recovery key files


@pytest.mark.parametrize("key", ["data/x..y", "data/.tmp-x", "data//x", "data/x%5Cy"])
def test_bad_keys_are_400(agent: tuple[Harness, dict[str, str]], key: str) -> None:
    server, headers = agent
    reply = server.client.put(f"/api/v1/agent/storage/{key}", content=b"x", headers=headers)
    assert reply.status_code == 400
    assert reply.json()["detail"].startswith("invalid storage key")


def test_bad_range_is_400(agent: tuple[Harness, dict[str, str]]) -> None:
    server, headers = agent
    server.client.put(f"/api/v1/agent/storage/{PACK}", content=b"abc", headers=headers)
    past_end = server.client.get(
        f"/api/v1/agent/storage/{PACK}", headers={**headers, "Range": "bytes=3-9"}
    )
    assert past_end.status_code == 416
    for value in ("bytes=2-1", "lines=1-2", "bytes=-"):
        reply = server.client.get(
            f"/api/v1/agent/storage/{PACK}", headers={**headers, "Range": value}
        )
        assert reply.status_code == 400, value


def test_uploads_over_the_limit_are_413(agent: tuple[Harness, dict[str, str]]) -> None:
    server, headers = agent
    server.state.settings.max_upload_bytes = 1000
    reply = server.client.put(f"/api/v1/agent/storage/{PACK}", content=b"x" * 1001, headers=headers)
    assert reply.status_code == 413
    assert reply.json()["detail"] == "uploads are limited to 1000 bytes; this one is 1001"


def test_a_big_upload_is_streamed_into_the_local_repository_and_named_there(
    tmp_path: Path,
) -> None:
    """A pack goes to a spool file as it arrives, which the local repository links under the
    pack's name: stored exactly, in many pieces, with no temp file left behind."""
    storage = tmp_path / "storage"
    settings = make_settings(tmp_path / "home", storage_url=f"file://{storage}")
    data = os.urandom(3 * WRITE_BEHIND + 12345)
    pieces = [data[at : at + 65536] for at in range(0, len(data), 65536)]
    with running_server(settings) as server:
        headers = server.enroll("fs1")
        url = f"/api/v1/agent/storage/{PACK}"
        reply = server.client.put(
            url, content=iter(pieces), headers={**headers, "Content-Length": str(len(data))}
        )
        assert reply.status_code == 201, reply.text
        assert server.client.get(url, headers=headers).content == data
        stored = storage / org_prefix(server.state.org_id) / PACK
        assert stored.read_bytes() == data
        assert sorted(p.name for p in stored.parent.iterdir()) == [stored.name]
        again = server.client.put(url, content=b"other", headers=headers)
        assert again.status_code == 412
        assert stored.read_bytes() == data


def test_an_upload_the_server_cannot_spool_is_503_and_stores_nothing(
    agent: tuple[Harness, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    class FullDisk(io.BytesIO):
        def writelines(self, lines: Iterable[bytes]) -> None:  # type: ignore[override]
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage_api, "open_spool", lambda directory=None: FullDisk())
    server, headers = agent
    reply = server.client.put(f"/api/v1/agent/storage/{PACK}", content=b"x" * 100, headers=headers)
    assert reply.status_code == 503
    assert reply.json()["detail"] == (
        f"the server cannot hold the upload of {PACK}: No space left on device"
    )
    listed = server.client.get("/api/v1/agent/storage?prefix=data/", headers=headers)
    assert listed.json() == []

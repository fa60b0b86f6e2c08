"""RemoteBackend: the storage contract over the data API, and the HTTP details behind it."""

from __future__ import annotations

import threading

import httpx
import pytest
from tests.contract.test_backend_contract import (  # noqa: F401 - the shared suite, rerun here
    Case,
    test_concurrent_put_files_of_one_key_have_one_winner,
    test_concurrent_puts_of_different_keys,
    test_concurrent_puts_of_one_key_have_one_winner,
    test_delete_then_list,
    test_describe_names_a_location,
    test_get_range,
    test_get_range_of_empty_object,
    test_hostile_keys_rejected,
    test_hostile_keys_rejected_by_put_file,
    test_hostile_prefixes_rejected,
    test_is_a_backend,
    test_list_never_shows_write_debris,
    test_list_prefixes,
    test_missing_key,
    test_missing_key_next_to_existing,
    test_overwrite_creates_missing,
    test_overwrite_replaces,
    test_put_after_delete,
    test_put_file_of_a_file_that_is_not_a_spool_file,
    test_put_file_of_the_wrong_size_is_refused_and_stores_nothing,
    test_put_file_overwrite_replaces_and_creates,
    test_put_file_reads_from_the_start_wherever_the_file_is,
    test_put_file_stores_the_exact_bytes,
    test_put_file_twice_raises_and_keeps_first,
    test_put_twice_raises_and_keeps_first,
    test_round_trip,
    test_spool_dir_is_a_directory_or_none,
    test_top_level_key,
)
from tests.helpers.spool import spooled
from tests.unit.agent.fake_server import BASE, FakeServer, detail

from roost.agent.remote_storage import RemoteBackend, remote_storage
from roost.agent.throttle import RateLimiter
from roost.agent.write_behind import WriteBehindBackend
from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage.base import Backend


@pytest.fixture
def server() -> FakeServer:
    return FakeServer(leases_only=False)


@pytest.fixture
def backend(server: FakeServer) -> Backend:
    return RemoteBackend(server.client(), BASE)


@pytest.fixture
def case(backend: Backend) -> Case:
    return Case("remote", backend)


# -- HTTP details -------------------------------------------------------------------------


def test_range_request_asks_for_exactly_the_bytes_needed(server: FakeServer) -> None:
    seen: list[str | None] = []

    def record(request: httpx.Request) -> None:
        seen.append(request.headers.get("Range"))

    server.before = record
    backend = RemoteBackend(server.client(), BASE)
    server.storage.put("data/aa/pack", bytes(range(200)))
    assert backend.get_range("data/aa/pack", 10, 5) == bytes(range(10, 15))
    assert seen == ["bytes=10-14"]


def test_server_ignoring_range_still_yields_the_range(server: FakeServer) -> None:
    def whole_object(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and "Range" in request.headers:
            return httpx.Response(200, content=bytes(range(100)))
        return None

    server.before = whole_object
    backend = RemoteBackend(server.client(), BASE)
    assert backend.get_range("data/aa/pack", 90, 20) == bytes(range(90, 100))


def test_keys_are_percent_encoded_and_round_trip(server: FakeServer) -> None:
    backend = RemoteBackend(server.client(), BASE)
    backend.put("snapshots/a b#c?d%e", b"odd")
    assert server.storage.get("snapshots/a b#c?d%e") == b"odd"
    assert backend.get("snapshots/a b#c?d%e") == b"odd"
    assert ("PUT", "/storage/snapshots/a%20b%23c%3Fd%25e") in server.requests


def test_overwrite_is_sent_as_the_protocol_header(server: FakeServer) -> None:
    headers: list[str | None] = []

    def record(request: httpx.Request) -> None:
        headers.append(request.headers.get("X-Roost-Overwrite"))

    server.before = record
    backend = RemoteBackend(server.client(), BASE)
    backend.put("leases/l1", b"a")
    backend.put("leases/l1", b"b", overwrite=True)
    assert headers == [None, "1"]


def test_server_policy_refusal_is_a_storage_error_with_the_servers_detail() -> None:
    server = FakeServer()  # the real policy: only leases/ may be deleted or overwritten
    backend = RemoteBackend(server.client(), BASE)
    backend.put("snapshots/s1", b"x")
    with pytest.raises(StorageError) as err:
        backend.delete("snapshots/s1")
    assert not isinstance(err.value, ObjectNotFound)
    assert str(err.value) == (
        f"the server refused to delete {BASE}/storage/snapshots/s1 (HTTP 403): "
        "agents may only delete leases/ objects"
    )
    assert server.storage.get("snapshots/s1") == b"x"


@pytest.mark.parametrize(
    ("status", "error"), [(404, ObjectNotFound), (412, ObjectExists), (500, StorageError)]
)
def test_status_codes_map_to_storage_errors(status: int, error: type[Exception]) -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: detail(status, "nope")))
    backend = RemoteBackend(client, BASE)
    with pytest.raises(error):
        backend.put("config", b"x")


def test_unexpected_status_message_names_object_and_detail() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: detail(507, "disk full")))
    with pytest.raises(StorageError) as err:
        RemoteBackend(client, BASE).get("index/i1")
    assert str(err.value) == (
        f"the server refused to read {BASE}/storage/index/i1 (HTTP 507): disk full"
    )


def test_network_failure_is_a_storage_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    with pytest.raises(StorageError) as err:
        RemoteBackend(client, BASE).stat("config")
    assert str(err.value) == f"cannot access {BASE}/storage/config: connection refused"


def test_remote_storage_retries_transient_failures(server: FakeServer) -> None:
    failures = iter([detail(503, "busy"), detail(502, "bad gateway")])
    server.before = lambda request: next(failures, None)
    sleeps: list[float] = []
    backend = remote_storage(server.client(), BASE, retry_sleep=sleeps.append)
    assert isinstance(backend, WriteBehindBackend)
    backend.put("data/ab/ab01", b"payload")
    backend.drain()  # packs go up in the background
    assert server.storage.get("data/ab/ab01") == b"payload"
    assert len(sleeps) == 2
    assert [m for m, _ in server.requests] == ["PUT", "PUT", "PUT"]


def test_throttled_put_sends_the_body_intact_in_paced_pieces(server: FakeServer) -> None:
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(64 * 1024, burst=64 * 1024, clock=lambda: clock[0], sleep=sleep)
    backend = RemoteBackend(server.client(), BASE, limiter=limiter)
    data = bytes(range(256)) * 1024  # 256 KiB: one burst, then three pieces of 64 KiB
    backend.put("data/ab/big", data)
    assert server.storage.get("data/ab/big") == data
    assert sleeps == [1.0, 1.0, 1.0]


def test_concurrent_range_reads(server: FakeServer) -> None:
    backend = RemoteBackend(server.client(), BASE)
    data = bytes(range(256)) * 64
    server.storage.put("data/cc/pack", data)
    errors: list[BaseException] = []

    def reader(start: int) -> None:
        try:
            for offset in range(start, len(data), 997):
                assert backend.get_range("data/cc/pack", offset, 50) == data[offset : offset + 50]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


class Stop(Exception):
    pass


def test_on_send_sees_every_piece_and_can_abort_an_upload(server: FakeServer) -> None:
    pieces: list[int] = []

    def count_then_stop(size: int) -> None:
        pieces.append(size)
        if len(pieces) == 3:
            raise Stop  # e.g. the job was cancelled while this pack was going up

    backend = RemoteBackend(server.client(), BASE, on_send=count_then_stop)
    backend.put("data/ab/small", b"x" * 100)
    assert pieces == [100]
    with pytest.raises(Stop):
        backend.put("data/ab/big", b"y" * (200 * 1024))
    assert pieces == [100, 65536, 65536]
    assert [info.key for info in server.storage.list("data/")] == ["data/ab/small"]


def test_abort_passes_through_the_retrying_wrapper(server: FakeServer) -> None:
    def stop(_size: int) -> None:
        raise Stop

    sleeps: list[float] = []
    backend = remote_storage(server.client(), BASE, on_send=stop, retry_sleep=sleeps.append)
    backend.put("data/ab/x", b"z")  # a pack: it goes up in the background...
    with pytest.raises(Stop):
        backend.put("index/x", b"z")  # ...and its failure stops the next index
    assert sleeps == []  # a cancel is not a storage failure: no retry
    with pytest.raises(Stop):
        backend.put("snapshots/x", b"z")  # nor is anything written after it


def test_empty_object_with_hooks(server: FakeServer) -> None:
    limiter = RateLimiter(1000, sleep=lambda _s: None)
    backend = RemoteBackend(server.client(), BASE, limiter=limiter, on_send=lambda _n: None)
    backend.put("data/ab/empty", b"")
    assert backend.get("data/ab/empty") == b""


# -- put_file: a pack streamed from its spool file ------------------------------------------


def test_put_file_streams_the_file_with_its_length_never_chunked(server: FakeServer) -> None:
    sent: list[tuple[str | None, str | None]] = []

    def record(request: httpx.Request) -> None:
        if request.method == "PUT":
            headers = request.headers
            sent.append((headers.get("Content-Length"), headers.get("Transfer-Encoding")))

    server.before = record
    pieces: list[int] = []
    backend = RemoteBackend(server.client(), BASE, on_send=pieces.append)
    data = bytes(range(256)) * 1024  # 256 KiB: four pieces
    with spooled(data) as file:
        backend.put_file("data/ab/big", file, len(data))
    assert server.storage.get("data/ab/big") == data
    assert sent == [(str(len(data)), None)]
    assert pieces == [65536] * 4


def test_retried_put_file_sends_the_whole_file_again(server: FakeServer) -> None:
    bodies: list[int] = []

    def fail_first(request: httpx.Request) -> httpx.Response | None:
        if request.method != "PUT":
            return None
        bodies.append(len(request.read()))  # the whole body went out before the failure
        return detail(503, "busy") if len(bodies) == 1 else None

    server.before = fail_first
    sleeps: list[float] = []
    backend = remote_storage(server.client(), BASE, retry_sleep=sleeps.append)
    data = b"p" * 300_000
    with spooled(data) as file:
        backend.put_file("data/ab/ab01", file, len(data))
    # the caller closed its spool file at once; the upload thread read a file of its own
    assert isinstance(backend, WriteBehindBackend)
    backend.drain()
    assert server.storage.get("data/ab/ab01") == data
    assert bodies == [len(data), len(data)] and len(sleeps) == 1

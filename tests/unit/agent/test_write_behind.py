"""WriteBehindBackend: packs go up in the background, everything else keeps the write order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

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
    test_is_a_backend,
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
from tests.helpers.spool import open_spool_files, spooled

from roost.agent.write_behind import WriteBehindBackend
from roost.errors import StorageError
from roost.storage.base import Backend
from roost.storage.memory import MemoryBackend

WAIT = 5.0


@pytest.fixture
def backend() -> Backend:
    return WriteBehindBackend(MemoryBackend())


@pytest.fixture
def case(backend: Backend) -> Case:
    return Case("write-behind", backend)


class Gate(MemoryBackend):
    """A memory backend whose pack puts wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.order: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail: Exception | None = None
        self._count = threading.Lock()

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        if key.startswith("data/"):
            with self._count:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.started.release()
            try:
                assert self.gate.wait(WAIT)
                if self.fail is not None:
                    raise self.fail
            finally:
                with self._count:
                    self.in_flight -= 1
        super().put(key, data, overwrite=overwrite)
        self.order.append(key)


def in_thread(call: object) -> threading.Thread:
    assert callable(call)
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_a_pack_put_returns_while_the_pack_is_still_going_up() -> None:
    inner = Gate()
    backend = WriteBehindBackend(inner)
    backend.put("data/ab/p1", b"pack")  # returns although the inner put is blocked
    assert inner.started.acquire(timeout=WAIT)
    assert inner.order == []
    inner.gate.set()
    backend.drain()
    assert inner.order == ["data/ab/p1"]


def test_an_index_waits_for_the_packs_before_it() -> None:
    inner = Gate()
    backend = WriteBehindBackend(inner)
    backend.put("data/ab/p1", b"pack")
    writer = in_thread(lambda: backend.put("index/i1", b"index"))
    time.sleep(0.1)
    assert inner.order == []  # the index is not written before its pack is stored
    inner.gate.set()
    writer.join(WAIT)
    assert inner.order == ["data/ab/p1", "index/i1"]


def test_reads_wait_for_the_packs_too() -> None:
    inner = Gate()
    backend = WriteBehindBackend(inner)
    backend.put("data/ab/p1", b"pack")
    seen: list[bytes] = []
    reader = in_thread(lambda: seen.append(backend.get("data/ab/p1")))
    time.sleep(0.1)
    assert seen == []
    inner.gate.set()
    reader.join(WAIT)
    assert seen == [b"pack"]


def test_at_most_depth_packs_in_flight() -> None:
    inner = Gate()
    backend = WriteBehindBackend(inner, depth=2)
    backend.put("data/ab/p1", b"1")
    backend.put("data/ab/p2", b"2")
    third = in_thread(lambda: backend.put("data/ab/p3", b"3"))
    time.sleep(0.1)
    assert third.is_alive()  # waits for a free slot: memory stays bounded
    inner.gate.set()
    third.join(WAIT)
    backend.drain()
    assert inner.most_in_flight == 2
    assert sorted(inner.order) == ["data/ab/p1", "data/ab/p2", "data/ab/p3"]


def test_a_failed_pack_fails_the_next_index_and_it_is_not_written() -> None:
    inner = Gate()
    inner.fail = StorageError("server gone")
    inner.gate.set()
    backend = WriteBehindBackend(inner)
    backend.put("data/ab/p1", b"pack")
    with pytest.raises(StorageError, match="server gone"):
        backend.put("index/i1", b"index")
    with pytest.raises(StorageError, match="server gone"):
        backend.put("data/ab/p2", b"next pack")  # and no further pack is accepted
    assert inner.order == []
    assert list(inner.list("")) == []


def test_leases_neither_wait_for_packs_nor_fail_because_of_them() -> None:
    inner = Gate()
    backend = WriteBehindBackend(inner)
    backend.put("data/ab/p1", b"pack")  # blocked
    backend.put("leases/l1", b"lease", overwrite=True)
    assert backend.get("leases/l1") == b"lease"
    assert inner.order == ["leases/l1"]
    inner.fail = StorageError("server gone")
    inner.gate.set()
    with pytest.raises(StorageError):
        backend.drain()
    backend.delete("leases/l1")  # a failed backup still releases its lease
    assert list(backend.list("leases/")) == []


def test_reads_after_a_failed_pack_see_it_absent() -> None:
    inner = Gate()
    inner.fail = StorageError("server gone")
    inner.gate.set()
    backend = WriteBehindBackend(inner)
    backend.put("data/ab/p1", b"pack")
    assert list(backend.list("data/")) == []


def test_a_pack_that_exists_already_is_stored() -> None:
    inner = MemoryBackend()
    inner.put("data/ab/p1", b"pack")
    backend = WriteBehindBackend(inner)
    backend.put("data/ab/p1", b"pack")  # content-addressed: the same pack
    backend.drain()
    backend.put("index/i1", b"index")
    assert inner.get("index/i1") == b"index"


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WriteBehindBackend(MemoryBackend(), depth=0)


def test_a_pack_from_a_spool_file_goes_up_after_its_owner_closed_the_file(
    tmp_path: Path,
) -> None:
    inner = Gate()
    backend = WriteBehindBackend(inner, depth=2)
    with spooled(b"pack one", str(tmp_path)) as file:
        backend.put_file("data/ab/p1", file, 8)  # returns although the inner put is blocked
        backend.put_file("data/ab/p2", file, 8)  # the same file twice, read independently
    assert inner.started.acquire(timeout=WAIT) and inner.order == []
    assert len(open_spool_files(tmp_path)) == 2  # each upload holds the file, not the bytes
    inner.gate.set()
    backend.drain()
    assert inner.get("data/ab/p1") == inner.get("data/ab/p2") == b"pack one"
    assert open_spool_files(tmp_path) == []  # and lets go of it once stored


def test_a_failed_pack_from_a_spool_file_lets_go_of_it(tmp_path: Path) -> None:
    inner = Gate()
    inner.fail = StorageError("server gone")
    inner.gate.set()
    backend = WriteBehindBackend(inner)
    with spooled(b"pack", str(tmp_path)) as file:
        backend.put_file("data/ab/p1", file, 4)
    with pytest.raises(StorageError, match="server gone"):
        backend.drain()
    assert open_spool_files(tmp_path) == []


class Reported:
    """An ``on_accepted`` hook that records what the write-behind reports, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, key: str) -> Callable[[], None]:
        self.seen.append(f"accepted {key}")
        return lambda: self.seen.append(f"stored {key}")


def test_a_pack_is_reported_when_accepted_and_again_once_stored() -> None:
    inner = Gate()
    reported = Reported()
    backend = WriteBehindBackend(inner, on_accepted=reported)
    backend.put("data/ab/p1", b"pack")
    assert reported.seen == ["accepted data/ab/p1"]  # before put returned
    assert inner.started.acquire(timeout=WAIT)
    assert reported.seen == ["accepted data/ab/p1"]  # still being sent: not stored
    inner.gate.set()
    backend.drain()  # returns only after the stored call
    assert reported.seen == ["accepted data/ab/p1", "stored data/ab/p1"]
    backend.put("index/i1", b"index")  # only packs go up behind the caller's back
    backend.put("leases/l1", b"lease", overwrite=True)
    assert reported.seen == ["accepted data/ab/p1", "stored data/ab/p1"]


def test_a_failed_pack_is_never_reported_stored_one_that_exists_is(tmp_path: Path) -> None:
    inner = Gate()
    inner.fail = StorageError("server gone")
    inner.gate.set()
    reported = Reported()
    backend = WriteBehindBackend(inner, on_accepted=reported)
    with spooled(b"pack", str(tmp_path)) as file:
        backend.put_file("data/ab/p1", file, 4)
    with pytest.raises(StorageError):
        backend.drain()
    assert reported.seen == ["accepted data/ab/p1"]

    inner = Gate()
    inner.gate.set()
    inner.put("data/ab/p2", b"pack")
    reported = Reported()
    backend = WriteBehindBackend(inner, on_accepted=reported)
    backend.put("data/ab/p2", b"pack")  # content-addressed: the same pack is stored
    backend.drain()
    assert reported.seen == ["accepted data/ab/p2", "stored data/ab/p2"]

"""RetryingBackend: what is retried, how often, how long it waits, and ambiguous writes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import BinaryIO

import pytest
from tests.helpers.spool import spooled

from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage.base import ObjectInfo
from roost.storage.faulty import FaultyBackend
from roost.storage.local import LocalBackend
from roost.storage.memory import MemoryBackend
from roost.storage.retry import RetryingBackend


class Sleeps(list[float]):
    """Records the delays instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def memory() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def faulty(memory: MemoryBackend) -> FaultyBackend:
    return FaultyBackend(memory)


@pytest.fixture
def retrying(faulty: FaultyBackend, sleeps: Sleeps) -> RetryingBackend:
    return RetryingBackend(faulty, attempts=5, base_delay=0.2, sleep=sleeps)


def test_success_needs_one_call_and_no_sleep(
    retrying: RetryingBackend, faulty: FaultyBackend, sleeps: Sleeps
) -> None:
    retrying.put("k", b"v")
    assert retrying.get("k") == b"v"
    assert faulty.calls == {"put": 1, "get": 1}
    assert sleeps == []


def test_transient_failures_are_retried_with_growing_delays(
    retrying: RetryingBackend, faulty: FaultyBackend, sleeps: Sleeps, memory: MemoryBackend
) -> None:
    memory.put("k", b"value")
    faulty.fail_next("get", times=3)
    assert retrying.get("k") == b"value"
    assert faulty.calls["get"] == 4
    assert len(sleeps) == 3
    # Jitter keeps each delay within [50%, 100%] of 0.2 s, 0.4 s, 0.8 s.
    for delay, ceiling in zip(sleeps, [0.2, 0.4, 0.8], strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_gives_up_after_attempts_with_the_last_error(
    retrying: RetryingBackend, faulty: FaultyBackend, sleeps: Sleeps, memory: MemoryBackend
) -> None:
    memory.put("k", b"value")
    last = StorageError("fifth failure")
    faulty.fail_next("get", times=4)
    faulty.fail_next("get", exc=last)
    with pytest.raises(StorageError) as err:
        retrying.get("k")
    assert err.value is last
    assert faulty.calls["get"] == 5
    assert len(sleeps) == 4


def test_delay_is_capped(faulty: FaultyBackend, memory: MemoryBackend, sleeps: Sleeps) -> None:
    retrying = RetryingBackend(
        faulty, attempts=6, base_delay=1.0, sleep=sleeps, max_delay=3.0, rng=random.Random(7)
    )
    memory.put("k", b"v")
    faulty.fail_next("stat", times=5)
    assert retrying.stat("k") == ObjectInfo("k", 1)
    for delay, ceiling in zip(sleeps, [1.0, 2.0, 3.0, 3.0, 3.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_object_not_found_is_an_answer_not_retried(
    retrying: RetryingBackend, faulty: FaultyBackend, sleeps: Sleeps
) -> None:
    with pytest.raises(ObjectNotFound):
        retrying.get("missing")
    with pytest.raises(ObjectNotFound):
        retrying.delete("missing")
    assert faulty.calls == {"get": 1, "delete": 1}
    assert sleeps == []


def test_object_exists_on_first_attempt_is_not_retried(
    retrying: RetryingBackend, faulty: FaultyBackend, memory: MemoryBackend, sleeps: Sleeps
) -> None:
    memory.put("k", b"same")
    with pytest.raises(ObjectExists):
        retrying.put("k", b"same")  # same size, but no earlier attempt could have written it
    assert faulty.calls == {"put": 1}
    assert sleeps == []


def test_other_exceptions_propagate_untouched(
    retrying: RetryingBackend, faulty: FaultyBackend
) -> None:
    bug = ValueError("a bug, not an outage")
    faulty.fail_next("get", exc=bug)
    with pytest.raises(ValueError) as err:
        retrying.get("k")
    assert err.value is bug
    assert faulty.calls["get"] == 1


def test_ambiguous_put_that_landed_is_success(
    retrying: RetryingBackend, faulty: FaultyBackend, memory: MemoryBackend, sleeps: Sleeps
) -> None:
    faulty.fail_next("put", after=True)  # stored, then the response was lost
    retrying.put("data/ab/ab01", b"content")
    assert memory.get("data/ab/ab01") == b"content"
    assert faulty.calls == {"put": 2, "stat": 1}
    assert len(sleeps) == 1


def test_ambiguous_put_finding_other_content_raises(
    retrying: RetryingBackend, faulty: FaultyBackend, memory: MemoryBackend
) -> None:
    faulty.fail_next("put")  # failed before reaching storage...
    memory.put("data/ab/ab01", b"a different object")  # ...and someone else wrote the key
    with pytest.raises(ObjectExists):
        retrying.put("data/ab/ab01", b"content")
    assert memory.get("data/ab/ab01") == b"a different object"
    assert faulty.calls == {"put": 2, "stat": 1}


def test_ambiguous_delete_that_landed_is_success(
    retrying: RetryingBackend, faulty: FaultyBackend, memory: MemoryBackend
) -> None:
    memory.put("locks/l1", b"lease")
    faulty.fail_next("delete", after=True)
    retrying.delete("locks/l1")
    assert list(memory.list("")) == []
    assert faulty.calls["delete"] == 2


def test_list_is_retried_whole(
    retrying: RetryingBackend, faulty: FaultyBackend, memory: MemoryBackend
) -> None:
    memory.put("index/a", b"1")
    memory.put("index/b", b"22")
    faulty.fail_next("list", times=2)
    assert sorted(retrying.list("index/"), key=lambda i: i.key) == [
        ObjectInfo("index/a", 1),
        ObjectInfo("index/b", 2),
    ]
    assert faulty.calls["list"] == 3


def test_put_and_range_pass_arguments_through(
    retrying: RetryingBackend, memory: MemoryBackend
) -> None:
    retrying.put("k", b"old")
    retrying.put("k", b"0123456789", overwrite=True)
    assert retrying.get_range("k", 2, 3) == b"234"
    assert memory.get("k") == b"0123456789"


def test_describe_and_inner(retrying: RetryingBackend, faulty: FaultyBackend) -> None:
    assert retrying.describe() == "faulty(memory://)"
    assert retrying.inner is faulty


def test_attempts_must_be_positive(memory: MemoryBackend) -> None:
    with pytest.raises(ValueError):
        RetryingBackend(memory, attempts=0)


class _ReadsThenFails(MemoryBackend):
    """put_file reads part of the file, then the connection drops (first ``failures`` times)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.positions: list[int] = []

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        self.positions.append(file.tell())
        if self.failures:
            self.failures -= 1
            file.read(3)
            raise StorageError("connection reset while sending")
        # as a stream would: from where the file is, no seek of its own
        self.put(key, file.read(size), overwrite=overwrite)


def test_put_file_retries_from_the_start_of_the_file(sleeps: Sleeps) -> None:
    inner = _ReadsThenFails(failures=2)
    retrying = RetryingBackend(inner, attempts=5, sleep=sleeps)
    with spooled(b"0123456789") as file:  # left at its end, as a pack builder leaves it
        retrying.put_file("data/ab/ab01", file, 10)
    assert inner.positions == [0, 0, 0] and len(sleeps) == 2
    assert inner.get("data/ab/ab01") == b"0123456789"


def test_ambiguous_put_file_that_landed_is_success(
    retrying: RetryingBackend, faulty: FaultyBackend, memory: MemoryBackend, sleeps: Sleeps
) -> None:
    faulty.fail_next("put", after=True)  # stored, then the response was lost
    with spooled(b"content") as file:
        retrying.put_file("data/ab/ab01", file, 7)
    assert memory.get("data/ab/ab01") == b"content"
    assert faulty.calls == {"put": 2, "put_file": 2, "stat": 1}


def test_spool_dir_is_the_inner_backends(tmp_path: Path) -> None:
    tmp_path.joinpath("repo").mkdir()
    local = LocalBackend(tmp_path / "repo")
    assert RetryingBackend(local).spool_dir() == local.spool_dir()
    assert RetryingBackend(MemoryBackend()).spool_dir() is None

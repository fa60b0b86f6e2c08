"""FaultyBackend: the failures it injects are exactly the ones asked for."""

from __future__ import annotations

import pytest
from tests.helpers.spool import spooled

from roost.errors import ObjectNotFound, StorageError
from roost.storage.faulty import FaultyBackend
from roost.storage.memory import MemoryBackend


@pytest.fixture
def memory() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def faulty(memory: MemoryBackend) -> FaultyBackend:
    return FaultyBackend(memory)


def test_healthy_by_default_and_counts_calls(faulty: FaultyBackend) -> None:
    faulty.put("a", b"1")
    faulty.put("b", b"22", overwrite=True)
    assert faulty.get("a") == b"1"
    assert faulty.get_range("b", 1, 5) == b"2"
    assert faulty.stat("b").size == 2
    assert {i.key for i in faulty.list("")} == {"a", "b"}
    faulty.delete("a")
    assert faulty.calls == {"put": 2, "get": 1, "get_range": 1, "stat": 1, "list": 1, "delete": 1}


def test_fail_next_fails_exactly_times_then_heals(
    faulty: FaultyBackend, memory: MemoryBackend
) -> None:
    faulty.fail_next("put", times=2)
    for _ in range(2):
        with pytest.raises(StorageError, match="injected failure in put"):
            faulty.put("k", b"v")
    assert list(memory.list("")) == []  # a failure before the call stores nothing
    faulty.put("k", b"v")
    assert memory.get("k") == b"v"
    assert faulty.calls["put"] == 3  # failed calls count too


def test_fail_next_raises_the_given_exception(faulty: FaultyBackend) -> None:
    boom = ObjectNotFound("gone")
    faulty.fail_next("stat", exc=boom)
    with pytest.raises(ObjectNotFound) as err:
        faulty.stat("k")
    assert err.value is boom


def test_fail_next_after_performs_the_call(faulty: FaultyBackend, memory: MemoryBackend) -> None:
    faulty.fail_next("put", after=True)
    with pytest.raises(StorageError):
        faulty.put("k", b"landed")
    assert memory.get("k") == b"landed"


def test_faults_are_per_method(faulty: FaultyBackend) -> None:
    faulty.fail_next("get")
    faulty.put("k", b"v")
    assert faulty.stat("k").size == 1
    with pytest.raises(StorageError):
        faulty.get("k")
    assert faulty.get("k") == b"v"


def test_fail_after_simulates_a_crash(faulty: FaultyBackend, memory: MemoryBackend) -> None:
    faulty.fail_after("put", 2)
    faulty.put("a", b"1")
    faulty.put("b", b"2")
    for key in ("c", "d", "e"):
        with pytest.raises(StorageError, match="injected crash in put"):
            faulty.put(key, b"3")
    assert sorted(i.key for i in memory.list("")) == ["a", "b"]
    assert faulty.get("a") == b"1"  # other methods keep working
    assert faulty.calls["put"] == 5


def test_fail_after_zero_fails_at_once(faulty: FaultyBackend) -> None:
    faulty.fail_after("list", 0)
    with pytest.raises(StorageError):
        faulty.list("")


def test_corrupt_on_get_flips_one_byte_of_matching_keys(faulty: FaultyBackend) -> None:
    data = bytes(range(100))
    faulty.put("data/ab/ab01", data)
    faulty.put("index/i1", data)
    faulty.put("data/ab/empty", b"")
    faulty.corrupt_on_get(lambda key: key.startswith("data/"))
    got = faulty.get("data/ab/ab01")
    assert len(got) == len(data)
    assert sum(a != b for a, b in zip(got, data, strict=True)) == 1
    ranged = faulty.get_range("data/ab/ab01", 10, 20)
    assert sum(a != b for a, b in zip(ranged, data[10:30], strict=True)) == 1
    assert faulty.get("index/i1") == data
    assert faulty.get("data/ab/empty") == b""


def test_heal_removes_all_faults(faulty: FaultyBackend) -> None:
    faulty.put("k", b"abc")
    faulty.fail_next("get", times=3)
    faulty.fail_after("put", 0)
    faulty.corrupt_on_get(lambda _: True)
    faulty.heal()
    assert faulty.get("k") == b"abc"
    faulty.put("k2", b"x")
    assert faulty.calls == {"put": 2, "get": 1}


def test_unknown_method_is_rejected(faulty: FaultyBackend) -> None:
    with pytest.raises(ValueError, match="unknown backend method"):
        faulty.fail_next("gett")
    with pytest.raises(ValueError):
        faulty.fail_after("bogus", 1)


def test_describe_wraps_inner(faulty: FaultyBackend, memory: MemoryBackend) -> None:
    assert faulty.describe() == "faulty(memory://)"
    assert faulty.inner is memory


def test_put_file_is_a_put_for_faults_and_counts(
    faulty: FaultyBackend, memory: MemoryBackend
) -> None:
    faulty.fail_after("put", 1)
    with spooled(b"pack") as file:
        faulty.put_file("data/ab/ab01", file, 4)
        with pytest.raises(StorageError, match="injected crash in put"):
            faulty.put_file("data/ab/ab02", file, 4)
    assert [i.key for i in memory.list("")] == ["data/ab/ab01"]
    assert faulty.calls == {"put": 2, "put_file": 2}
    assert faulty.spool_dir() is None

"""The one behaviour every storage backend must show (see roost.storage.base.Backend)."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
from tests.helpers.spool import spooled

from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage.base import Backend, ObjectInfo
from roost.storage.local import LocalBackend
from roost.storage.memory import MemoryBackend
from roost.storage.retry import RetryingBackend
from roost.storage.s3 import S3Backend
from roost.storage.url import open_backend

MIB = 1024 * 1024


@dataclass
class Case:
    """A backend plus, where the backend has such a notion, a way to leave write debris."""

    name: str
    backend: Backend
    # Leaves a half-written object beside the given key, as a crash mid-put would.
    plant_debris: Callable[[str], None] | None = None


def _no_sleep(_: float) -> None:
    pass  # hostile keys are StorageErrors, which a RetryingBackend retries


def _local_case(root: Path, *, retrying: bool = False) -> Case:
    root.mkdir()  # as init leaves it: spool files can be made there from the start

    def plant(key: str) -> None:
        *dirs, name = key.split("/")
        directory = root.joinpath(*dirs)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f".tmp-{name}-crashed").write_bytes(b"half")

    if retrying:
        return Case("retrying-local", RetryingBackend(LocalBackend(root), sleep=_no_sleep), plant)
    return Case("local", LocalBackend(root), plant)


@pytest.fixture(
    params=["local", "retrying-local", "memory", "s3", "s3-fallback", "retrying-memory"]
)
def case(request: pytest.FixtureRequest, tmp_path: Path, make_s3: Callable[..., S3Backend]) -> Case:
    name: str = request.param
    if name.endswith("local"):
        return _local_case(tmp_path / "repo", retrying=name == "retrying-local")
    if name == "memory":
        return Case(name, MemoryBackend())
    if name == "retrying-memory":
        return Case(name, RetryingBackend(MemoryBackend(), sleep=_no_sleep))
    # s3-fallback takes the head-then-put path used with servers lacking If-None-Match.
    return Case(name, make_s3(conditional_put=name == "s3"))


@pytest.fixture
def backend(case: Case) -> Backend:
    return case.backend


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def listed(backend: Backend, prefix: str) -> dict[str, int]:
    infos = list(backend.list(prefix))
    keys = [i.key for i in infos]
    assert len(keys) == len(set(keys)), f"duplicates in listing: {keys}"
    return {i.key: i.size for i in infos}


def test_is_a_backend(backend: Backend) -> None:
    assert isinstance(backend, Backend)


@pytest.mark.parametrize("size", [0, 1, 4096, 5 * MIB], ids=["empty", "1B", "4KiB", "5MiB"])
def test_round_trip(backend: Backend, size: int) -> None:
    data = blob(size, seed=size)
    backend.put("data/ab/ab01", data)
    assert backend.get("data/ab/ab01") == data
    assert backend.stat("data/ab/ab01") == ObjectInfo("data/ab/ab01", size)


def test_top_level_key(backend: Backend) -> None:
    backend.put("config", b"cfg")
    assert backend.get("config") == b"cfg"
    assert listed(backend, "") == {"config": 3}


def test_put_twice_raises_and_keeps_first(backend: Backend) -> None:
    backend.put("snapshots/s1", b"first")
    with pytest.raises(ObjectExists):
        backend.put("snapshots/s1", b"second, longer")
    assert backend.get("snapshots/s1") == b"first"
    assert listed(backend, "snapshots/") == {"snapshots/s1": 5}


def test_overwrite_replaces(backend: Backend) -> None:
    backend.put("locks/l1", b"old lease")
    backend.put("locks/l1", b"new", overwrite=True)
    assert backend.get("locks/l1") == b"new"
    assert listed(backend, "locks/") == {"locks/l1": 3}


def test_overwrite_creates_missing(backend: Backend) -> None:
    backend.put("locks/l2", b"lease", overwrite=True)
    assert backend.get("locks/l2") == b"lease"


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.get("data/00/0000"),
        lambda b: b.get_range("data/00/0000", 0, 10),
        lambda b: b.get_range("data/00/0000", 0, 0),
        lambda b: b.stat("data/00/0000"),
        lambda b: b.delete("data/00/0000"),
    ],
    ids=["get", "get_range", "get_range-empty", "stat", "delete"],
)
def test_missing_key(backend: Backend, call: Callable[[Backend], object]) -> None:
    with pytest.raises(ObjectNotFound):
        call(backend)


def test_missing_key_next_to_existing(backend: Backend) -> None:
    backend.put("data/00/0001", b"x")
    with pytest.raises(ObjectNotFound):
        backend.get("data/00/0002")
    with pytest.raises(ObjectNotFound):
        backend.get("data/00")  # a "directory" is not an object


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 10, slice(0, 10)),  # start
        (400, 100, slice(400, 500)),  # middle
        (990, 10, slice(990, 1000)),  # exactly the end
        (995, 10, slice(995, 1000)),  # straddles the end: fewer bytes
        (1000, 10, slice(0, 0)),  # at the end
        (5000, 10, slice(0, 0)),  # far past the end
        (10, 0, slice(0, 0)),  # empty range
        (0, 1000, slice(0, 1000)),  # whole object
    ],
)
def test_get_range(backend: Backend, offset: int, length: int, expected: slice) -> None:
    data = blob(1000, seed=1)
    backend.put("data/aa/aa00", data)
    assert backend.get_range("data/aa/aa00", offset, length) == data[expected]


def test_get_range_of_empty_object(backend: Backend) -> None:
    backend.put("data/aa/empty", b"")
    assert backend.get_range("data/aa/empty", 0, 10) == b""


REPO = {
    "config": 6,
    "keys/k1": 10,
    "index/i1": 11,
    "index/i2": 12,
    "data/ab/ab01": 13,
    "data/ab/ab02": 14,
    "data/ac/ac01": 15,
    "data/cd/cd01": 16,
    "dataset/x": 17,  # shares the text prefix 'data' but not the directory 'data/'
}


def fill(backend: Backend) -> None:
    for n, (key, size) in enumerate(REPO.items()):
        backend.put(key, blob(size, seed=n))


@pytest.mark.parametrize(
    "prefix",
    ["", "data/", "data/ab/", "data/a", "data", "index/", "keys/", "config", "nothing/", "dat"],
)
def test_list_prefixes(backend: Backend, prefix: str) -> None:
    fill(backend)
    expected = {k: v for k, v in REPO.items() if k.startswith(prefix)}
    assert listed(backend, prefix) == expected


def test_list_never_shows_write_debris(case: Case) -> None:
    fill(case.backend)
    if case.plant_debris is not None:
        case.plant_debris("data/ab/ab03")
        case.plant_debris("index/i3")
        case.plant_debris("config2")
    assert listed(case.backend, "") == REPO
    assert listed(case.backend, "data/ab/") == {"data/ab/ab01": 13, "data/ab/ab02": 14}


def test_delete_then_list(backend: Backend) -> None:
    fill(backend)
    backend.delete("data/ab/ab01")
    backend.delete("config")
    expected = {k: v for k, v in REPO.items() if k not in ("data/ab/ab01", "config")}
    assert listed(backend, "") == expected
    assert listed(backend, "data/ab/") == {"data/ab/ab02": 14}
    with pytest.raises(ObjectNotFound):
        backend.get("data/ab/ab01")
    with pytest.raises(ObjectNotFound):
        backend.delete("data/ab/ab01")


def test_put_after_delete(backend: Backend) -> None:
    backend.put("index/i1", b"one")
    backend.delete("index/i1")
    backend.put("index/i1", b"two")
    assert backend.get("index/i1") == b"two"


def test_concurrent_puts_of_different_keys(backend: Backend) -> None:
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(10):
                backend.put(f"data/{t:02x}/{t:02x}{i:04x}", blob(100 + i, seed=t))
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    expected = {f"data/{t:02x}/{t:02x}{i:04x}": 100 + i for t in range(8) for i in range(10)}
    assert listed(backend, "data/") == expected
    assert backend.get("data/03/030004") == blob(104, seed=3)


def _eight_writers_of_one_key(case: Case, store: Callable[[int, threading.Barrier], None]) -> None:
    """Eight threads store 64 bytes each under one key at once: exactly one wins."""
    if case.name.startswith("s3"):
        # Atomicity there is the server's job (If-None-Match); moto does not promise it.
        pytest.skip("no-overwrite races are enforced by the S3 server, not by roost")
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def writer(t: int) -> None:
        try:
            store(t, barrier)
            outcomes.append("won")
        except ObjectExists:
            outcomes.append("lost")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    data = case.backend.get("snapshots/race")
    assert len(data) == 64 and len(set(data)) == 1
    assert listed(case.backend, "") == {"snapshots/race": 64}


def test_concurrent_puts_of_one_key_have_one_winner(case: Case) -> None:
    def store(t: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        case.backend.put("snapshots/race", bytes([t]) * 64)

    _eight_writers_of_one_key(case, store)


HOSTILE_KEYS = [
    "",
    "/etc/passwd",
    "../escape",
    "data/../../escape",
    "data/..",
    "a/./b",
    "data//ab",
    "data/",
    "data\\ab",
    "nul\x00byte",
    ".tmp-x",  # would be invisible to list on local storage
    "data/ab/.tmp-ab01-123",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_rejected(case: Case, key: str, tmp_path: Path) -> None:
    backend = case.backend
    with pytest.raises(StorageError) as err:
        backend.put(key, b"evil")
    assert not isinstance(err.value, ObjectExists | ObjectNotFound)
    for call in (backend.get, backend.stat, backend.delete):
        with pytest.raises(StorageError):
            call(key)
    assert not (tmp_path / "escape").exists()
    assert listed(backend, "") == {}


@pytest.mark.parametrize("prefix", ["/", "../", "data/../", "a//", "x\\y"])
def test_hostile_prefixes_rejected(backend: Backend, prefix: str) -> None:
    with pytest.raises(StorageError):
        list(backend.list(prefix))


def test_describe_names_a_location(backend: Backend) -> None:
    assert backend.describe()


# -- put_file: storing from a (spool) file, as packs are stored -------------------------------


@contextmanager
def spool_of(backend: Backend, data: bytes) -> Iterator[BinaryIO]:
    """An unnamed spool file holding ``data`` where the backend wants it (as a backup makes)."""
    file = spooled(data, backend.spool_dir())
    try:
        yield file
    finally:
        file.close()


@pytest.mark.parametrize("size", [0, 1, 4096, 5 * MIB], ids=["empty", "1B", "4KiB", "5MiB"])
def test_put_file_stores_the_exact_bytes(backend: Backend, size: int) -> None:
    data = blob(size, seed=size)
    with spool_of(backend, data) as file:
        backend.put_file("data/ab/ab01", file, size)
    # the object outlives the file (a linked spool file is the object itself)
    assert backend.get("data/ab/ab01") == data
    assert backend.stat("data/ab/ab01") == ObjectInfo("data/ab/ab01", size)
    assert listed(backend, "") == {"data/ab/ab01": size}


def test_put_file_of_a_file_that_is_not_a_spool_file(backend: Backend, tmp_path: Path) -> None:
    named = tmp_path / "named"
    named.write_bytes(b"named file")
    with named.open("rb") as file:
        backend.put_file("index/i1", file, 10)
    backend.put_file("index/i2", io.BytesIO(b"in memory"), 9)
    named.write_bytes(b"changed!!!")  # the stored object is a copy
    assert backend.get("index/i1") == b"named file"
    assert backend.get("index/i2") == b"in memory"


def test_put_file_twice_raises_and_keeps_first(backend: Backend) -> None:
    with spool_of(backend, b"first") as first, spool_of(backend, b"second, longer") as second:
        backend.put_file("snapshots/s1", first, 5)
        with pytest.raises(ObjectExists):
            backend.put_file("snapshots/s1", second, 14)
        with pytest.raises(ObjectExists):
            backend.put("snapshots/s1", b"third")
    assert backend.get("snapshots/s1") == b"first"
    assert listed(backend, "snapshots/") == {"snapshots/s1": 5}


def test_put_file_overwrite_replaces_and_creates(backend: Backend) -> None:
    backend.put("locks/l1", b"old lease")
    with spool_of(backend, b"new") as new, spool_of(backend, b"lease") as other:
        backend.put_file("locks/l1", new, 3, overwrite=True)
        backend.put_file("locks/l2", other, 5, overwrite=True)
    assert backend.get("locks/l1") == b"new" and backend.get("locks/l2") == b"lease"
    assert listed(backend, "locks/") == {"locks/l1": 3, "locks/l2": 5}


def test_put_file_of_the_wrong_size_is_refused_and_stores_nothing(backend: Backend) -> None:
    with spool_of(backend, b"12345") as file:
        for size in (4, 6):
            with pytest.raises(ValueError, match="holds 5 bytes"):
                backend.put_file("data/ab/ab01", file, size)
    assert listed(backend, "") == {}


def test_put_file_reads_from_the_start_wherever_the_file_is(backend: Backend) -> None:
    with spool_of(backend, b"0123456789") as file:
        file.seek(7)
        backend.put_file("data/ab/ab01", file, 10)
        backend.put_file("data/ab/ab02", file, 10)  # the same file twice: a retry
    assert backend.get("data/ab/ab01") == backend.get("data/ab/ab02") == b"0123456789"


def test_concurrent_put_files_of_one_key_have_one_winner(case: Case) -> None:
    def store(t: int, barrier: threading.Barrier) -> None:
        with spool_of(case.backend, bytes([t]) * 64) as file:
            barrier.wait()
            case.backend.put_file("snapshots/race", file, 64)

    _eight_writers_of_one_key(case, store)


def test_hostile_keys_rejected_by_put_file(case: Case) -> None:
    with spool_of(case.backend, b"evil") as file:
        for key in HOSTILE_KEYS:
            with pytest.raises(StorageError) as err:
                case.backend.put_file(key, file, 4)
            assert not isinstance(err.value, ObjectExists | ObjectNotFound)
    assert listed(case.backend, "") == {}


def test_spool_dir_is_a_directory_or_none(backend: Backend) -> None:
    where = backend.spool_dir()
    assert where is None or Path(where).is_dir()


def test_open_backend_s3_url_end_to_end(s3_location: str) -> None:
    backend = open_backend(s3_location)
    backend.put("config", b"cfg")
    backend.put("data/ab/ab01", b"blob")
    with pytest.raises(ObjectExists):
        backend.put("config", b"other")
    assert listed(backend, "") == {"config": 3, "data/ab/ab01": 4}
    assert backend.get_range("data/ab/ab01", 1, 2) == b"lo"
    assert backend.describe().startswith("s3://roost-contract/url-")

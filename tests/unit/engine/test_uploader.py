"""BlobSaver: claims, the bounded set of claimed ids, packed checkpoints, packs in spool files."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest
from tests.helpers.spool import open_spool_files

from roost.engine import compress, uploader
from roost.engine.archiver import Archiver
from roost.engine.check import check_repository
from roost.engine.keys import KdfParams
from roost.engine.pack import DATA_BLOB, TREE_BLOB
from roost.engine.repository import Repository
from roost.engine.uploader import BlobSaver
from roost.errors import StorageError
from roost.storage import local as local_module
from roost.storage.faulty import FaultyBackend
from roost.storage.local import LocalBackend
from roost.storage.memory import MemoryBackend
from roost.storage.retry import RetryingBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)
PACK = 64 * 1024


@pytest.fixture()
def repo() -> Repository:
    repository, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK, pack_size=PACK)
    return repository


def _sealed(count: int, size: int) -> tuple[bytes, list[tuple[int, bytes, int, int, int]]]:
    """A segment as a worker sends it (stand-in bytes: nothing here decrypts them)."""
    blobs = [(DATA_BLOB, os.urandom(32), size, size, 0) for _ in range(count)]
    return os.urandom(count * size), blobs


def test_claimed_ids_are_forgotten_once_the_index_has_them(repo: Repository) -> None:
    saver = BlobSaver(repo, repo.load_index(), workers=1)
    segment, blobs = _sealed(12, 10_000)  # two packs' worth
    ids = [blob[1] for blob in blobs]
    assert saver.claim_many([(DATA_BLOB, b, 10_000) for b in ids]) == ids
    assert saver.claim_many([(DATA_BLOB, ids[0], 10_000)]) == []  # claimed: stored once
    saver.add_segment(segment, blobs)
    saver.wait_stored()  # full packs are stored by upload threads
    assert saver.stats.packs_written == 1
    # the full pack's ids moved to the index; the open pack's are still only claimed
    in_index = [b for b in ids if b in saver.index]
    assert in_index and len(saver._seen) == len(ids) - len(in_index)
    assert all(saver.has_live(b) for b in ids)
    saver.flush()
    saver.close()
    assert not saver._seen and all(saver.has_live(b) for b in ids)
    assert (saver.stats.blobs_new, saver.stats.blobs_dedup) == (12, 1)
    fresh = Repository.open(repo.backend, "pw").load_index()
    assert all(fresh.is_live(b) for b in ids)


def test_checkpoints_list_every_pack_and_blob(repo: Repository) -> None:
    saver = BlobSaver(repo, repo.load_index(), workers=1, checkpoint_packs=2)
    trees = [saver.save(TREE_BLOB, os.urandom(30_000))[0] for _ in range(7)]
    saver.flush()
    saver.close()
    files = repo.read_index_files()
    assert saver.stats.index_files_written == len(files) >= 2
    listed = [e.id for f in files.values() for entries in f.packs.values() for e in entries]
    assert sorted(listed) == sorted(trees)
    assert sum(len(f.packs) for f in files.values()) == saver.stats.packs_written
    assert all(repo.read_blob(tree) for tree in trees)


def test_a_checkpoint_follows_once_checkpoint_blobs_blobs_are_stored(repo: Repository) -> None:
    saver = BlobSaver(repo, repo.load_index(), workers=1, checkpoint_blobs=20)
    segment, blobs = _sealed(50, 5_000)  # 14 blobs fill a pack
    saver.claim_many([(DATA_BLOB, blob[1], 5_000) for blob in blobs])
    saver.add_segment(segment, blobs)
    saver.flush()
    saver.close()
    files = repo.read_index_files()
    counts = sorted(sum(map(len, f.packs.values())) for f in files.values())
    # Packs (14 blobs each, 8 in the last) are stored by upload threads in any order; the
    # store that makes the blobs reach 20 writes a checkpoint of exactly the packs stored so
    # far: 14 + 14 or 14 + 8 first, then the rest.
    assert counts == [22, 28]


class _SlowBackend(MemoryBackend):
    """Pack stores wait until released; records how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.running = self.most = 0
        self._count = threading.Lock()

    def put_file(self, key: str, file: BinaryIO, size: int, *, overwrite: bool = False) -> None:
        assert key.startswith("data/")  # packs, and only packs, are stored from files
        with self._count:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(10)
        with self._count:
            self.running -= 1
        super().put_file(key, file, size, overwrite=overwrite)


def test_a_slow_storage_holds_back_new_packs_instead_of_piling_them_up() -> None:
    backend = _SlowBackend()
    repo, _ = Repository.init(backend, "pw", kdf=WEAK, pack_size=PACK)
    saver = BlobSaver(repo, repo.load_index(), workers=1)
    # four answer threads, each with a pack's worth of sealed blobs
    threads = [
        threading.Thread(target=saver.add_segment, args=_sealed(2, PACK // 2)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while backend.running < uploader.MAX_STORING and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # time enough for a third pack to be opened, if it could be
    assert backend.running == uploader.MAX_STORING
    assert not saver._open  # the next pack waits for one of them to be stored
    backend.release.set()
    for thread in threads:
        thread.join(10)
    saver.flush()
    saver.close()
    assert backend.most == uploader.MAX_STORING and saver.stats.packs_written == 4


# -- spool files: where packs are built, and that none outlives a backup ----------------------


def _source(root: Path) -> Path:
    for number in range(40):  # incompressible: about 30 packs of 64 KiB
        path = root / f"dir{number % 4}" / f"file{number:02d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(50_000))
    return root


def _debris(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp")]


def test_a_backup_links_its_spool_files_into_the_repository_and_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    repo, _ = Repository.init(RetryingBackend(LocalBackend(root)), "pw", kdf=WEAK, pack_size=PACK)
    if repo.backend.spool_dir() != str(root):
        pytest.skip("the file system here has no O_TMPFILE")
    linked: list[str] = []
    real_link = local_module.link_unnamed

    def link(file: BinaryIO, directory: Path, name: str) -> bool:
        done = real_link(file, directory, name)
        linked.extend([name] if done else [])
        return done

    monkeypatch.setattr(local_module, "link_unnamed", link)
    _, summary = Archiver(repo).run([str(_source(tmp_path / "src"))])
    assert summary.packs_written > 10
    assert len(linked) == summary.packs_written  # every pack was published, never copied
    assert open_spool_files(root) == [] and _debris(root) == []
    assert check_repository(Repository.open(LocalBackend(root), "pw"), read_data=True).ok


@pytest.mark.parametrize("where", ["local", "memory"])
def test_failed_pack_stores_leave_no_spool_file_and_a_sound_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    root, spool = tmp_path / "repo", tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # TMPDIR: where others spool
    faulty = FaultyBackend(LocalBackend(root) if where == "local" else MemoryBackend())
    repo, _ = Repository.init(faulty, "pw", kdf=WEAK, pack_size=PACK)
    saver = BlobSaver(repo, repo.load_index(), workers=2)
    segment, blobs = _sealed(30, 5_000)  # two full packs, and a third left open
    saver.claim_many([(DATA_BLOB, blob[1], 5_000) for blob in blobs])
    saver.save(TREE_BLOB, os.urandom(1000))  # a tree pack is open too
    faulty.fail_after("put", 0)  # the storage goes away
    saver.add_segment(segment, blobs)  # the first full pack goes to an upload thread ...
    with pytest.raises(StorageError, match="injected crash"):
        saver.wait_stored()  # ... which fails to store it
    with pytest.raises(StorageError, match="injected crash"):
        saver.claim_many([(DATA_BLOB, b"n" * 32, 1)])  # and the saver takes nothing more
    saver.close()  # as the archiver does when the backup fails
    assert faulty.calls["put_file"] == 2  # both full packs went to upload threads, and failed
    assert open_spool_files(root) == open_spool_files(spool) == []
    assert os.listdir(spool) == []
    if where == "local":
        assert _debris(root) == []
        assert check_repository(Repository.open(LocalBackend(root), "pw")).ok


def test_a_backup_whose_last_packs_fail_leaves_no_spool_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    faulty = FaultyBackend(LocalBackend(root))
    repo, _ = Repository.init(faulty, "pw", kdf=WEAK, pack_size=PACK)
    real_flush = BlobSaver.flush

    def flush(saver: BlobSaver) -> None:
        faulty.fail_after("put", 0)  # after the walk: the open packs cannot be stored
        real_flush(saver)

    monkeypatch.setattr(BlobSaver, "flush", flush)
    with pytest.raises(StorageError, match="injected crash"):
        Archiver(repo).run([str(_source(tmp_path / "src"))])
    assert faulty.calls["put_file"] > 10  # the full packs were stored from spool files
    assert open_spool_files(root) == [] and _debris(root) == []
    assert check_repository(Repository.open(LocalBackend(root), "pw")).ok


def test_compressed_blobs_from_a_worker_are_encrypted_into_packs(repo: Repository) -> None:
    """A worker sends blobs compressed, not encrypted: the saver encrypts each on its way into
    a pack, across pack boundaries, and every blob reads back as its plaintext."""
    # raw (random) ones and compressed ones, ~130 KB sealed: more than one 64 KiB pack
    plain = [os.urandom(3000 + n) if n % 2 else os.urandom(200) * 20 for n in range(80)]
    blobs, payloads = [], []
    for data in plain:
        method, payload = compress.compress(data)
        payloads.append(bytes(payload))
        blobs.append((DATA_BLOB, repo.key.chunk_id(data), len(payload), len(data), method))
    saver = BlobSaver(repo, repo.load_index(), workers=1)
    saver.claim_many([(DATA_BLOB, blob[1], blob[3]) for blob in blobs])
    saver.add_compressed(b"".join(payloads), blobs)
    saver.flush()
    saver.close()
    assert {blob[4] for blob in blobs} == {compress.RAW, compress.ZSTD_COMPACT}
    assert saver.stats.packs_written == 2
    fresh = Repository.open(repo.backend, "pw")
    fresh.load_index()
    assert [fresh.read_blob(blob[1]) for blob in blobs] == plain


def test_big_and_small_blobs_are_encoded_by_the_saving_thread_the_others_by_the_pool(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From COMPRESS_HERE_FROM bytes a blob is compressed from the caller's buffer, without
    the copy a queued one takes; up to COMPRESS_HERE_UP_TO (a tree, mostly) it costs less
    than the hand-over to the pool. All read back as their plaintext."""
    monkeypatch.setattr(uploader, "COMPRESS_HERE_FROM", 50_000)
    monkeypatch.setattr(uploader, "COMPRESS_HERE_UP_TO", 10_000)
    saver = BlobSaver(repo, repo.load_index(), workers=1)
    encoded_on: dict[int, str] = {}
    encode = saver._encode_and_pack

    def recording(blob_type: int, blob_id: bytes, data: bytes | memoryview) -> None:
        encoded_on[len(data)] = threading.current_thread().name
        encode(blob_type, blob_id, data)

    monkeypatch.setattr(saver, "_encode_and_pack", recording)
    big, middle, small = b"big blob " * 10_000, os.urandom(40_000), b"small blob " * 900
    saved = [saver.save(DATA_BLOB, memoryview(data)) for data in (big, middle, small)]
    saver.flush()
    saver.close()
    assert [is_new for _, is_new in saved] == [True, True, True]
    here = threading.current_thread().name
    assert encoded_on[len(big)] == here
    assert encoded_on[len(middle)] != here
    assert encoded_on[len(small)] == here
    fresh = Repository.open(repo.backend, "pw")
    fresh.load_index()
    assert [fresh.read_blob(blob_id) for blob_id, _ in saved] == [big, middle, small]


def test_a_thread_frees_its_compressor_after_a_big_blob_once_no_more_are_queued(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big file's chunks leave a ~2.5 MiB zstd context in each compressing thread; it is
    freed when the pool runs dry, and not for the small blobs (trees) saved meanwhile."""
    released_on: list[str] = []
    release = compress.release_compressor

    def recording() -> None:
        released_on.append(threading.current_thread().name)
        release()

    monkeypatch.setattr(compress, "release_compressor", recording)
    saver = BlobSaver(repo, repo.load_index(), workers=1)
    saver.save(TREE_BLOB, b"a small tree " * 100)
    assert released_on == []
    saver.save(DATA_BLOB, os.urandom(100_000) + b"x" * 100_000)
    saver.wait_idle()
    assert len(released_on) == 1 and released_on[0].startswith("roost-saver")
    saver.flush()
    saver.close()

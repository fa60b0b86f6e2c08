"""BlobSaver: claims, the bounded set of claimed ids, packed checkpoints, packs in memory."""

from __future__ import annotations

import os
import threading
import time

import pytest

from roost.engine import uploader
from roost.engine.keys import KdfParams
from roost.engine.pack import DATA_BLOB, TREE_BLOB
from roost.engine.repository import Repository
from roost.engine.uploader import BlobSaver
from roost.storage.memory import MemoryBackend

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
    assert counts == [22, 28]  # 14 + 14 blobs reach 20; then 14 + the last 8 at the end


class _SlowBackend(MemoryBackend):
    """Pack puts wait until released; records how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.running = self.most = 0
        self._count = threading.Lock()

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        if key.startswith("data/"):
            with self._count:
                self.running += 1
                self.most = max(self.most, self.running)
            self.release.wait(10)
            with self._count:
                self.running -= 1
        super().put(key, data, overwrite=overwrite)


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

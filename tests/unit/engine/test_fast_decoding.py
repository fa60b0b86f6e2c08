"""The fast paths of a backup's start: tree decoding, index loading, windowed tree reads."""

from __future__ import annotations

import time

import orjson
import pytest
import zstandard

from roost.engine.index import INDEX_AAD, IndexEvents, IndexFile, Location, MasterIndex
from roost.engine.keys import KdfParams
from roost.engine.pack import DATA_BLOB, TREE_BLOB, BlobEntry
from roost.engine.repository import Repository, _WindowCache
from roost.engine.tree import (
    DIR,
    FILE,
    SYMLINK,
    Node,
    decode_tree,
    encode_entries,
    encode_entry,
    encode_tree,
)
from roost.errors import CorruptObject
from roost.storage.memory import MemoryBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)


def _nodes() -> list[Node]:
    return [
        Node(
            name=b"plain",
            type=FILE,
            mode=0o100644,
            uid=1000,
            gid=1000,
            user="u",
            group="g",
            size=12,
            mtime_ns=1_793_988_916_000_000_000,
            atime_ns=2,
            ctime_ns=3,
            inode=4,
            device=5,
            nlink=2,
            content=[bytes(range(32)), bytes(32)],
            xattrs=[(b"user.a", b"\x00\xff"), (b"user.\xff", b"v")],
            attributes=7,
        ),
        Node(name=b"\xffnot-utf8\n", type=FILE, size=3, extents=[(0, 1), (4096, 2)]),
        Node(name=b"dir", type=DIR, mode=0o40755, subtree=bytes(range(1, 33))),
        Node(name=b"link", type=SYMLINK, target=b"/t\xfe"),
        Node(name=b"utf8-link", type=SYMLINK, target=b"target"),
        Node(name=b"empty", type=FILE),
    ]


def test_tree_round_trip_keeps_every_field() -> None:
    nodes = _nodes()
    assert decode_tree(encode_tree(nodes)) == sorted(nodes, key=lambda n: n.name)


def test_entries_encoded_one_by_one_join_into_the_same_tree_blob() -> None:
    nodes = _nodes()
    shuffled = [nodes[3], nodes[0], nodes[5], nodes[1], nodes[4], nodes[2]]
    pairs = [(node.name, encode_entry(node)) for node in shuffled]
    assert encode_entries(pairs) == encode_tree(nodes)
    assert encode_entries([]) == encode_tree([]) == b'{"v":1,"nodes":[]}'


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "file", "name": "a", "size": "12"},
        {"type": "file", "name": "a", "mtime_ns": 1.5},
        {"type": "file", "name": "a", "inode": None},
        {"type": "file", "name": "a", "attributes": [1]},
        {"type": "file", "name": "a", "content": ["zz"]},
        {"type": "file", "name": "a", "extents": [[1]]},
        {"type": "nonsense", "name": "a"},
        {"name": "a"},
        {"type": "symlink", "name": "a", "target_b64": "!!"},
    ],
)
def test_malformed_tree_entries_are_corrupt(entry: dict[str, object]) -> None:
    with pytest.raises(CorruptObject):
        decode_tree(orjson.dumps({"v": 1, "nodes": [entry]}))


def _index_file() -> IndexFile:
    pack_a, pack_b = b"a" * 32, b"b" * 32
    return IndexFile(
        created_ns=5,
        packs={
            pack_a: [BlobEntry(DATA_BLOB, b"1" * 32, 0, 100, 200, 1)],
            pack_b: [
                BlobEntry(TREE_BLOB, b"2" * 32, 0, 50, 80, 1),
                BlobEntry(DATA_BLOB, b"1" * 32, 50, 100, 200, 0),
            ],
        },
        tombstones=[(pack_a, b"1" * 32, 9)],
        supersedes=[b"s" * 32],
    )


def test_index_file_round_trip_and_events_merge_like_files() -> None:
    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    original = _index_file()
    _, sealed = original.encode(repo.key)
    assert IndexFile.decode(repo.key, sealed) == original
    later = IndexFile(
        created_ns=7, packs={b"c" * 32: [BlobEntry(DATA_BLOB, b"1" * 32, 0, 1, 2, 0)]}
    )
    _, sealed_later = later.encode(repo.key)
    from_files, from_events = MasterIndex(), MasterIndex()
    from_files.merge({b"f1": IndexFile.decode(repo.key, sealed), b"f2": later})
    from_events.merge(
        {
            b"f1": IndexEvents.decode(repo.key, sealed),
            b"f2": IndexEvents.decode(repo.key, sealed_later),
        }
    )
    for blob in (b"1" * 32, b"2" * 32):
        assert from_events.locations(blob) == from_files.locations(blob)
        assert all(type(loc) is Location for loc in from_events.locations(blob))
    assert from_events.live(b"1" * 32) == Location(b"b" * 32, DATA_BLOB, 50, 100, 200, 0)
    assert from_events.index_ids == from_files.index_ids


def test_truncated_index_file_is_corrupt() -> None:
    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    sealed = repo.key.encrypt(zstandard.ZstdCompressor().compress(b"RIX1" + bytes(9)), INDEX_AAD)
    with pytest.raises(CorruptObject):
        IndexEvents.decode(repo.key, sealed)
    with pytest.raises(CorruptObject):
        IndexFile.decode(repo.key, sealed)


def test_load_index_sees_every_index_file() -> None:
    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    repo.write_index_file(_index_file())
    repo.write_index_file(
        IndexFile(time.time_ns(), {b"d" * 32: [BlobEntry(0, b"3" * 32, 0, 1, 1, 0)]})
    )
    index = repo.load_index()
    assert len(index) == 3 and b"3" * 32 in index
    assert set(repo.read_index_files()) == index.index_ids


class _CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[str, int, int]] = []

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.ranges.append((key, offset, length))
        return super().get_range(key, offset, length)


def test_window_cache_reads_each_window_once_and_slices_exactly() -> None:
    backend = _CountingBackend()
    pack = b"p" * 32
    data = bytes(range(256)) * 40  # 10,240 bytes
    backend.put(f"data/{pack.hex()[:2]}/{pack.hex()}", data)
    cache = _WindowCache(backend, size=4096, count=2)
    assert cache.read(pack, 10, 20) == data[10:30]
    assert cache.read(pack, 100, 1000) == data[100:1100]
    assert len(backend.ranges) == 1
    assert cache.read(pack, 4000, 200) == data[4000:4200]  # straddles: read alone
    assert len(backend.ranges) == 2
    assert cache.read(pack, 9000, 100) == data[9000:9100]  # the last window is short
    assert cache.read(pack, 10000, 300) == data[10000:]  # past the end: fewer bytes
    assert cache.read(pack, 5000, 10) == data[5000:5010]
    assert len(backend.ranges) == 4
    assert cache.read(pack, 0, 5) == data[:5]  # evicted (two windows kept): read again
    assert len(backend.ranges) == 5


def test_trees_read_through_windows_still_verify(tmp_path: object) -> None:
    backend = _CountingBackend()
    repo, _ = Repository.init(backend, "pw", kdf=WEAK)
    from roost.engine.uploader import BlobSaver

    saver = BlobSaver(repo, repo.load_index())
    trees = [encode_tree([Node(name=b"f%d" % i, type=FILE, size=i)]) for i in range(50)]
    ids = [saver.save(TREE_BLOB, tree)[0] for tree in trees]
    saver.flush()
    saver.close()
    fresh = Repository.open(backend, "pw")
    backend.ranges.clear()
    for tree_id, tree in zip(ids, trees, strict=True):
        assert fresh.read_blob(tree_id) == tree
    assert len(backend.ranges) == 1
    loc = fresh.index.find(ids[0])
    assert loc is not None
    with pytest.raises(CorruptObject):  # a wrong id for the bytes at that place
        fresh.read_blob_at(ids[1], loc)

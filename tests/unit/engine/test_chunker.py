"""The block-wise chunker cuts exactly where pyfastcdc's streaming chunker cuts."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from pyfastcdc import FastCDC

from roost.engine import chunker as chunker_module
from roost.engine.chunker import Chunker, ExtentReader

MIN, AVG, MAX, SEED = 64 * 1024, 256 * 1024, 1024 * 1024, 12345


def _reference(data: bytes) -> list[bytes]:
    cdc = FastCDC(AVG, min_size=MIN, max_size=MAX, seed=SEED)
    return [bytes(c.data) for c in cdc.cut_buf(data)]


@pytest.mark.parametrize("size", [0, 1, MIN, MAX, 3 * MAX + 17, 9 * MAX + 5])
@pytest.mark.parametrize("block", [MIN // 2 + 1, MAX // 4, MAX, 2 * MAX, 3 * MAX + 1])
def test_block_cuts_equal_whole_buffer_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, block: int
) -> None:
    monkeypatch.setattr(chunker_module, "BLOCK_SIZE", block)
    rng = random.Random(size)
    data = rng.randbytes(size // 2) + bytes(size - size // 2)  # random, then a zero run
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [
            bytes(c) for c in Chunker(MIN, AVG, MAX, SEED).chunks(ExtentReader(fd, [(0, size)]))
        ]
    finally:
        os.close(fd)
    assert chunks == _reference(data)
    assert b"".join(chunks) == data


def test_a_maximal_chunk_at_a_block_end_is_cut_not_carried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zeros have no cut points: every chunk is maximal. One that ends with a block is cut
    there (more data cannot change it), so the buffer never holds it plus another block."""
    monkeypatch.setattr(chunker_module, "BLOCK_SIZE", MAX // 2)
    data = bytes(6 * MAX) + b"end"
    path = tmp_path / "zeros"
    path.write_bytes(data)
    chunker = Chunker(MIN, AVG, MAX, SEED)
    reached: list[int] = []
    monkeypatch.setattr(chunker._buffers, "reach", reached.append)
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [bytes(c) for c in chunker.chunks(ExtentReader(fd, [(0, len(data))]))]
    finally:
        os.close(fd)
    assert [len(c) for c in chunks] == [MAX] * 6 + [3]
    assert chunks == _reference(data)
    assert max(reached) == MAX  # was MAX + BLOCK_SIZE: a whole chunk carried, and a block


def test_extents_are_read_back_to_back(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.write(b"a" * 100)
        f.seek(1000)
        f.write(b"b" * 50)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = ExtentReader(fd, [(0, 100), (1000, 50)])
        buffer = bytearray(1000)
        assert reader.readinto(memoryview(buffer)[:120]) == 120
        assert buffer[:120] == b"a" * 100 + b"b" * 20
        assert reader.readinto(memoryview(buffer)) == 30
        assert buffer[:30] == b"b" * 30
        assert reader.readinto(memoryview(buffer)[:10]) == 0
        assert reader.bytes_read == 150
    finally:
        os.close(fd)


def test_a_file_that_shrinks_while_read_stops_the_extents(tmp_path: Path) -> None:
    path = tmp_path / "shrunk"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = ExtentReader(fd, [(0, 100), (200, 100)])  # the second extent is gone
        assert reader.readinto(memoryview(bytearray(300))) == 100
        assert reader.readinto(memoryview(bytearray(300))) == 0
    finally:
        os.close(fd)


def test_one_thread_reuses_its_buffer_across_files(tmp_path: Path) -> None:
    """A shorter second file must not see the first file's bytes left in the buffer."""
    chunker = Chunker(MIN, AVG, MAX, SEED)
    buffers = []
    for number, data in enumerate((os.urandom(5 * MAX + 3), os.urandom(MAX // 2 + 1))):
        path = tmp_path / f"f{number}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = [bytes(c) for c in chunker.chunks(ExtentReader(fd, [(0, len(data))]))]
        finally:
            os.close(fd)
        assert chunks == _reference(data)
        buffers.append(chunker._buffers.get(0))
    assert buffers[0] is buffers[1]


def test_a_chunk_kept_past_its_turn_is_released_not_silently_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(random.Random(7).randbytes(4 * MAX))
    fd = os.open(path, os.O_RDONLY)
    try:
        kept = list(Chunker(MIN, AVG, MAX, SEED).chunks(ExtentReader(fd, [(0, 4 * MAX)])))
    finally:
        os.close(fd)
    assert len(kept) > 1
    with pytest.raises(ValueError, match="released"):
        bytes(kept[0])

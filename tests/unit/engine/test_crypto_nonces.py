"""Nonces come from a per-thread random pool: unique, 12 bytes, and never shared with a fork."""

from __future__ import annotations

import os

import pytest

from roost.engine.crypto import NONCE_SIZE, OVERHEAD, Key, MasterKey, random_nonce
from roost.errors import CorruptObject


def test_nonces_are_unique_across_pool_refills() -> None:
    seen = {random_nonce() for _ in range(5000)}
    assert len(seen) == 5000
    assert all(len(nonce) == NONCE_SIZE for nonce in seen)


def test_a_forked_child_draws_fresh_nonces() -> None:
    random_nonce()  # fill this thread's pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next nonce
        os.write(write, random_nonce())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, NONCE_SIZE)
    parent_next = random_nonce()
    assert child != parent_next


def test_encrypt_round_trip_and_distinct_ciphertexts() -> None:
    key = Key(MasterKey.generate())
    first, second = key.encrypt(b"same", b"aad"), key.encrypt(b"same", b"aad")
    assert first != second
    assert key.decrypt(first, b"aad") == key.decrypt(second, b"aad") == b"same"


def test_encrypt_into_writes_an_object_decrypt_accepts() -> None:
    key = Key(MasterKey.generate())
    out = bytearray(b"\xee" * 100)
    length = key.encrypt_into(b"plaintext", b"aad", memoryview(out)[10:])
    assert length == len(b"plaintext") + OVERHEAD
    assert out[:10] == b"\xee" * 10 and out[10 + length :] == b"\xee" * (90 - length)
    assert key.decrypt(bytes(out[10 : 10 + length]), b"aad") == b"plaintext"
    with pytest.raises(CorruptObject, match="failed authentication"):
        key.decrypt(bytes(out[10 : 10 + length]), b"other aad")


def test_encrypt_all_into_lays_objects_end_to_end_each_with_its_own_nonce() -> None:
    key = Key(MasterKey.generate())
    plaintexts = [b"first", b"", b"third object" * 10]
    aads = [b"a", b"b", b"c"]
    out = bytearray(b"\xee" * 300)
    end = key.encrypt_all_into(
        [(memoryview(p), a) for p, a in zip(plaintexts, aads, strict=True)], memoryview(out)
    )
    assert end == sum(len(p) + OVERHEAD for p in plaintexts)
    assert out[end:] == b"\xee" * (300 - end)
    objects, start = [], 0
    for plaintext in plaintexts:
        objects.append(bytes(out[start : start + len(plaintext) + OVERHEAD]))
        start += len(plaintext) + OVERHEAD
    assert [key.decrypt(o, a) for o, a in zip(objects, aads, strict=True)] == plaintexts
    assert len({o[1 : 1 + NONCE_SIZE] for o in objects}) == 3
    with pytest.raises(CorruptObject, match="failed authentication"):
        key.decrypt(objects[0], aads[1])  # bound to its own aad

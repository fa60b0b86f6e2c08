"""Worker processes: the channel to the parent (framing, out-of-band data, ends), prestarting."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.engine import procreader, scanworker, workerproc
from roost.engine.crypto import MasterKey
from roost.engine.workerproc import Channel


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel]]:
    ours, theirs = socket.socketpair()
    left, right = Channel(ours.detach()), Channel(theirs.detach())
    yield left, right
    left.close()
    right.close()


def test_messages_arrive_in_order_and_intact(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    messages = [("scan", 1, [(b"/a", b"a", None)]), ("stop",), {"k": [1, 2.5, None]}]
    for message in messages:
        left.send(message)
    assert [right.recv() for _ in messages] == messages


def test_pickle_buffers_travel_out_of_band_as_read_only_views(
    pair: tuple[Channel, Channel],
) -> None:
    left, right = pair
    segment = os.urandom(100_000)  # fits the socket's buffer: no reader thread needed
    left.send(("sealed", 7, pickle.PickleBuffer(segment), pickle.PickleBuffer(b"xy"), [1]))
    kind, number, first, second, rest = right.recv()
    assert (kind, number, rest) == ("sealed", 7, [1])
    assert isinstance(first, memoryview) and first.readonly
    assert bytes(first) == segment
    assert bytes(second) == b"xy"


def test_messages_larger_than_the_socket_buffer(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    big = os.urandom(8 * 1024 * 1024)  # far more than a socket buffer: partial writes

    def send_both() -> None:
        left.send(("big", big))
        left.send(("data", pickle.PickleBuffer(big)))

    sender = threading.Thread(target=send_both)
    sender.start()
    assert right.recv() == ("big", big)
    kind, view = right.recv()
    sender.join()
    assert kind == "data" and bytes(view) == big
    left.send(("small",))  # the receive buffer shrank back and still works
    assert right.recv() == ("small",)


def test_out_of_band_data_reuses_one_receive_buffer_given_back_beyond_what_is_kept(
    pair: tuple[Channel, Channel],
) -> None:
    left, right = pair
    big = os.urandom(3 * 1024 * 1024)  # beyond what the channel keeps touched
    sender = threading.Thread(target=left.send, args=(("sealed", pickle.PickleBuffer(big)),))
    sender.start()
    _, first = right.recv()
    sender.join()
    assert bytes(first) == big
    buffer = first.obj
    first.release()
    right.release_received()  # the message is handled: its pages beyond the kept part go
    kept = workerproc._KEEP_OUT_OF_BAND
    assert buffer[kept : kept + 4096] == bytes(4096)  # given back: zero pages again
    assert buffer[:4096] == big[:4096]  # the kept part stays
    left.send(("sealed", pickle.PickleBuffer(b"next segment")))
    _, second = right.recv()
    assert second.obj is buffer and bytes(second) == b"next segment"


def test_end_of_file_between_messages_is_eof(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    left.send(("last",))
    left.close()
    assert right.recv() == ("last",)
    with pytest.raises(EOFError):
        right.recv()


def test_end_of_file_inside_a_message_is_an_os_error() -> None:
    ours, theirs = socket.socketpair()
    right = Channel(theirs.detach())
    ours.sendall(b"\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00abc")  # 16 announced, 3 sent
    ours.close()
    with pytest.raises(OSError, match="closed in the middle of a message"):
        right.recv()
    right.close()


def test_close_is_idempotent(pair: tuple[Channel, Channel]) -> None:
    left, _ = pair
    left.close()
    left.close()
    assert left.closed


def test_a_prestarted_worker_is_handed_out_and_answers(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    workerproc.prestart(scanworker.__name__, 1)
    warm_pid = workerproc._warm[scanworker.__name__][0][0].pid
    master = MasterKey.generate()
    sizes = (64 * 1024, 256 * 1024, 1024 * 1024)
    setup = procreader.WorkerSetup(master.id_key, master.chunker_seed, *sizes)
    worker = scanworker.start_worker(setup, "test")
    try:
        assert worker.process.pid == warm_pid
        assert workerproc._warm[scanworker.__name__] == []
        worker.conn.send(("scan", 1, [(bytes(tmp_path) + b"/", None, [b"f"], frozenset())]))
        kind, number, answers, candidates, identical_bytes = worker.conn.recv()
        assert (kind, number, len(answers)) == ("scanned", 1, 1)
        assert [r.outcome for r in answers[0]] == [procreader.STORED]
        assert ([c[2] for c in candidates], identical_bytes) == ([4], 0)
    finally:
        worker.conn.send(("stop",))
        worker.stop()
    assert worker.exitcode == 0


def test_a_worker_starts_with_a_fixed_malloc_threshold_the_main_process_keeps_its_own(
    tmp_path: Path,
) -> None:
    (tmp_path / "f").write_bytes(b"data")
    master = MasterKey.generate()
    setup = procreader.WorkerSetup(master.id_key, master.chunker_seed, 65536, 262144, 1048576)
    worker = scanworker.start_worker(setup, "test")
    try:
        worker.conn.send(("scan", 1, [(bytes(tmp_path) + b"/", None, [b"f"], frozenset())]))
        assert worker.conn.recv()[0] == "scanned"  # running: its environment is its own
        environ = Path(f"/proc/{worker.process.pid}/environ").read_bytes().split(b"\0")
    finally:
        worker.conn.send(("stop",))
        worker.stop()
    assert b"MALLOC_MMAP_THRESHOLD_=1048576" in environ
    assert b"MALLOC_TRIM_THRESHOLD_=2097152" in environ
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ  # set for the worker only


def test_prestarted_workers_nobody_took_are_stopped() -> None:
    workerproc.prestart(scanworker.__name__, 2)
    processes = [process for process, _ in workerproc._warm[scanworker.__name__]]
    workerproc.discard_warm()
    assert [process.poll() is not None for process in processes] == [True, True]
    assert workerproc._warm == {}


def test_a_backup_worker_loads_no_cipher_and_nothing_it_does_not_use() -> None:
    # secrets -> hmac -> _hashlib maps libcrypto (3.4 MiB resident) into every worker;
    # cryptography (~9 MiB) is the main process's, which encrypts; subprocess, tempfile and
    # shutil (~1 MiB) serve starting processes and spooling packs, which workers never do
    unwanted = "{'_hashlib', 'secrets', 'cryptography', 'subprocess', 'tempfile', 'shutil'}"
    check = f"import sys, roost.engine.scanworker; print(sorted({unwanted} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

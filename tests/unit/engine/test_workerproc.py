"""The channel between a worker process and its parent: framing, out-of-band data, ends."""

from __future__ import annotations

import os
import pickle
import socket
import threading
from collections.abc import Iterator

import pytest

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

"""Wire form of paths (any bytes round-trip) and source <-> snapshot path mapping."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.agent.paths import PathMap, from_wire, to_wire, wire_text
from roost.protocol.agent_api import MissedFile


@pytest.mark.parametrize(
    ("raw", "wire"),
    [
        (b"/srv/plain.txt", "/srv/plain.txt"),
        (b"/srv/caf\xc3\xa9", "/srv/café"),
        (b"/srv/caf\xe9", "/srv/caf\\xe9"),
        (b"/srv/\xff\xfe", "/srv/\\xff\\xfe"),
        (b"C:\\Data\\x", "C:\\Data\\x"),  # backslashes of Windows paths stay readable
    ],
)
def test_wire_form(raw: bytes, wire: str) -> None:
    assert to_wire(raw) == wire
    assert from_wire(wire) == raw
    MissedFile(path=wire, reason="r")  # the protocol accepts it


@given(st.binary(max_size=40))
def test_any_name_without_literal_escapes_round_trips(raw: bytes) -> None:
    wire = to_wire(raw)
    if "\\x" not in raw.decode("utf-8", "replace"):
        assert from_wire(wire) == raw


def test_surrogates_from_fsdecode_are_made_safe() -> None:
    assert wire_text(os.fsdecode(b"caf\xe9")) == "caf\\xe9"


MAP = PathMap.from_read_paths(
    {"/srv/share": "/snap/job/share", "/srv/share/nested": "/snap2/nested", "/home": "/home"}
)


@pytest.mark.parametrize(
    ("source", "read"),
    [
        (b"/srv/share", b"/snap/job/share"),
        (b"/srv/share/a/b", b"/snap/job/share/a/b"),
        (b"/srv/share/nested/x", b"/snap2/nested/x"),  # the longer source wins
        (b"/srv/shared/x", None),  # a sibling with a common prefix is not inside
        (b"/home/u/f", b"/home/u/f"),
        (b"/elsewhere", None),
    ],
)
def test_to_read(source: bytes, read: bytes | None) -> None:
    assert MAP.to_read(source) == read


@pytest.mark.parametrize(
    ("read", "source"),
    [
        (b"/snap/job/share/a", b"/srv/share/a"),
        (b"/snap2/nested/x", b"/srv/share/nested/x"),
        (b"/unmapped/x", b"/unmapped/x"),
    ],
)
def test_to_source(read: bytes, source: bytes) -> None:
    assert MAP.to_source(read) == source


def test_identity_and_root_sources() -> None:
    live = PathMap.from_read_paths({"/a": "/a", "/b": "/b"})
    assert live.identity and not MAP.identity
    root = PathMap.from_read_paths({"/": "/snap/root"})
    assert root.to_read(b"/etc/x") == b"/snap/root/etc/x"
    assert root.to_source(b"/snap/root/etc/x") == b"/etc/x"


def test_windows_separator() -> None:
    shadow = "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy3\\Data"
    vss = PathMap.from_read_paths({"C:\\Data": shadow}, sep=b"\\")
    assert vss.to_read(b"C:\\Data\\x.doc") == os.fsencode(shadow) + b"\\x.doc"
    assert vss.to_source(os.fsencode(shadow) + b"\\x.doc") == b"C:\\Data\\x.doc"

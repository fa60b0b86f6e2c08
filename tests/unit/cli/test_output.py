"""How names and sizes are shown: one line per name, and no two names shown alike."""

from __future__ import annotations

import pytest

from roost.cli.output import format_size, show_path


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"/srv/plain name.txt", "/srv/plain name.txt"),
        ("/srv/café/日本".encode(), "/srv/café/日本"),
        (b"/srv/caf\xe9", "/srv/caf\\xe9"),  # not UTF-8
        (b"/srv/new\nline\ttab\rcr", "/srv/new\\nline\\ttab\\rcr"),
        (b"/srv/bell\x07del\x7f", "/srv/bell\\x07del\\x7f"),
        (b"/srv/back\\slash", "/srv/back\\\\slash"),
        (b"/srv/literal\\xe9", "/srv/literal\\\\xe9"),  # differs from the undecodable byte
        ("/srv/c1\u0085ls\u2028".encode(), "/srv/c1\\u0085ls\\u2028"),
    ],
)
def test_show_path_escapes_what_would_be_ambiguous(raw: bytes, shown: str) -> None:
    assert show_path(raw) == shown
    assert show_path(raw.decode("utf-8", "surrogateescape")) == shown  # str from a snapshot


def test_show_path_never_shows_two_names_alike() -> None:
    names = [b"a\xe9", b"a\\xe9", "aé".encode(), b"a\n", b"a\\n", b"a\\\n"]
    assert len({show_path(name) for name in names}) == len(names)


@pytest.mark.parametrize(
    ("count", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 * 2**30, "5.0 GiB")],
)
def test_format_size_uses_binary_units(count: int, shown: str) -> None:
    assert format_size(count) == shown

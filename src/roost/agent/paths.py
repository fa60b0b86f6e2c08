"""Paths on the wire and paths inside snapshots.

**Wire form.** The protocol carries paths as JSON strings, and a file name on Linux is any
bytes. A path is sent as UTF-8 with each byte that is not part of valid UTF-8 written as
``\\xNN`` (always >= 0x80, as Python's ``backslashreplace`` writes it); :func:`from_wire`
reverses that, so a missed file with a non-UTF-8 name comes back in ``force_read`` as the
same bytes. (A name whose valid UTF-8 text contains a literal backslash, ``x`` and two hex
digits from 80 to ff would be misread; no such name is plausible.)

**Snapshot paths.** A provider may read a source from somewhere else (``/srv/share`` from
``/srv/.roost-snap-<job>/share``). :class:`PathMap` translates between the source paths the
user named and the read paths, both ways, by longest matching prefix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_ESCAPED = re.compile(r"\\x([89a-f][0-9a-f])")


def to_wire(path: bytes | str) -> str:
    raw = os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def from_wire(text: str) -> bytes:
    return b"".join(_wire_parts(text))


def _wire_parts(text: str) -> list[bytes]:
    parts: list[bytes] = []
    last = 0
    for match in _ESCAPED.finditer(text):
        parts.append(text[last : match.start()].encode("utf-8"))
        parts.append(bytes([int(match.group(1), 16)]))
        last = match.end()
    parts.append(text[last:].encode("utf-8"))
    return parts


def wire_text(text: str) -> str:
    """Any text (possibly holding surrogate escapes from file names) made safe to send."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class PathMap:
    """(source path, read path) pairs; identity for a live scan."""

    pairs: tuple[tuple[bytes, bytes], ...]
    sep: bytes = b"/"

    @classmethod
    def from_read_paths(cls, read_paths: dict[str, str], sep: bytes = b"/") -> PathMap:
        pairs = ((os.fsencode(src), os.fsencode(dst)) for src, dst in read_paths.items())
        # longest source first, so a nested source wins over its parent
        return cls(tuple(sorted(pairs, key=lambda pair: -len(pair[0]))), sep)

    @property
    def identity(self) -> bool:
        return all(src == dst for src, dst in self.pairs)

    def read_paths(self) -> list[bytes]:
        return [dst for _, dst in self.pairs]

    def to_read(self, path: bytes) -> bytes | None:
        """Where the source path ``path`` is read, or None when it is under no source."""
        return _swap(path, [(src, dst) for src, dst in self.pairs], self.sep)

    def to_source(self, path: bytes) -> bytes:
        """The source path a read path stands for (unchanged when under no read path)."""
        by_read = sorted(((dst, src) for src, dst in self.pairs), key=lambda p: -len(p[0]))
        swapped = _swap(path, by_read, self.sep)
        return path if swapped is None else swapped

    def read_to_source(self) -> dict[bytes, bytes]:
        return {dst: src for src, dst in self.pairs}


def _swap(path: bytes, pairs: list[tuple[bytes, bytes]], sep: bytes) -> bytes | None:
    for old, new in pairs:
        if path == old:
            return new
        prefix = old if old.endswith(sep) else old + sep
        if path.startswith(prefix):
            return new.rstrip(sep) + sep + path[len(prefix) :]
    return None

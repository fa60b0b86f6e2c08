"""Output helpers: JSON on stdout, human text and tables, sizes, times and safe path display.

Human output goes through Rich consoles (stdout for results, stderr for progress, warnings
and errors); ``--json`` output is plain ``json.dumps`` with ``ensure_ascii`` so that names
with non-UTF-8 bytes (kept as surrogate escapes) always serialise. Rich is imported only when
a console or table is needed (it takes 25 ms): plain lines and JSON never need it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PIPED_WIDTH = 200  # tables written to a pipe or file are not squeezed into 80 columns


def format_size(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units, three significant digits."""
    value = float(count)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}h{minutes:02d}m{int(secs):02d}s"
    if minutes:
        return f"{minutes}m{int(secs):02d}s"
    return f"{secs:.1f}s"


def format_time(moment: datetime) -> str:
    """A stored UTC time shown in the local time zone."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def show_path(path: str | bytes) -> str:
    """A path printable on one line and unambiguous: bytes that are not UTF-8 become ``\\xNN``,
    control characters ``\\n``, ``\\t`` or ``\\xNN``, and a backslash ``\\\\``."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    # A literal backslash is doubled first, so an escape produced by decoding stays distinct.
    text = "\\\\".join(part.decode("utf-8", "backslashreplace") for part in raw.split(b"\\"))
    return "".join(_escape_char(ch) for ch in text)


def _escape_char(ch: str) -> str:
    if ch in "\n\r\t":
        return _ESCAPES[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0x80 <= code < 0xA0 or code in (0x2028, 0x2029):
        return f"\\u{code:04x}"  # not \\xNN, which stands for an undecodable byte
    return ch


def json_path(path: bytes) -> str:
    """A path for JSON: surrogate escapes for non-UTF-8 bytes (``\\udcNN`` once encoded)."""
    return os.fsdecode(path)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=True) + "\n")


def print_json_list(items: Iterable[Any]) -> None:
    """A JSON array written item by item, so a huge listing needs no memory."""
    out = sys.stdout
    first = True
    for item in items:
        out.write(("[\n  " if first else ",\n  ") + json.dumps(item, ensure_ascii=True))
        first = False
    out.write("[]\n" if first else "\n]\n")


def stdout_console() -> Console:
    from rich.console import Console

    console = Console(highlight=False, emoji=False)
    if not console.is_terminal:
        console.width = max(console.width, _PIPED_WIDTH)
    return console


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, emoji=False)


def say(text: str = "", style: str | None = None, *, err: bool = False) -> None:
    """One line of plain text (never markup, never wrapped), styled only on a terminal."""
    stream = sys.stderr if err else sys.stdout
    if style is None or not stream.isatty():
        stream.write(text + "\n")  # fast: `roost ls` may print millions of lines
        return
    console = stderr_console() if err else stdout_console()
    console.print(text, style=style, markup=False, soft_wrap=True)


def warn(message: str) -> None:
    say(f"warning: {message}", "yellow", err=True)


def table(*columns: str, numeric: Iterable[str] = ()) -> Table:
    from rich.table import Table

    right = set(numeric)
    grid = Table(show_edge=False, box=None, pad_edge=False, header_style="bold")
    for name in columns:
        grid.add_column(name, justify="right" if name in right else "left", overflow="fold")
    return grid


def add_row(grid: Table, *cells: str) -> None:
    """Cells as plain text: names from a snapshot must never be read as Rich markup."""
    from rich.text import Text

    grid.add_row(*(Text(cell) for cell in cells))


def print_table(grid: Table) -> None:
    stdout_console().print(grid)

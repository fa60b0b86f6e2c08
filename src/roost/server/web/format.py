"""Jinja filters: sizes, durations, times and progress as people read them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
DASH = "–"


def size(value: int | float | None) -> str:
    if value is None:
        return DASH
    amount = float(value)
    for unit in _UNITS:
        if abs(amount) < 1024 or unit == _UNITS[-1]:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} PiB"


def rate(value: int | float | None) -> str:
    """Bytes per second: ``12.5 MiB/s``."""
    return DASH if value is None else f"{size(value)}/s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def eta(seconds: float | None) -> str:
    """Time left: ``–`` when unknown, ``< 1s`` rather than a misleading ``0s``."""
    if seconds is None:
        return DASH
    return "< 1s" if seconds < 1 else duration(seconds)


def elapsed(start: datetime | None, end: datetime | None) -> str:
    """How long from ``start`` to ``end``: ``–`` unless both are known, ``< 1s`` if shorter."""
    if start is None or end is None:
        return DASH
    return eta((end - start).total_seconds())


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else DASH


def stamp(value: datetime | None) -> Markup:
    """``when`` as a <time> element whose date and time never break inside themselves, so a
    narrow table column wraps it between the two (and nowhere else)."""
    if value is None:
        return Markup(DASH)
    return Markup(
        '<time datetime="{iso}"><span class="nowrap">{date}</span> '
        '<span class="nowrap">{time} UTC</span></time>'
    ).format(
        iso=value.isoformat(), date=value.strftime("%Y-%m-%d"), time=value.strftime("%H:%M:%S")
    )


def path(value: str) -> Markup:
    """A file path that a narrow column may wrap after any ``/`` (escaped; no other change to
    the text a reader copies)."""
    return Markup(str(escape(value)).replace("/", "/<wbr>"))


def percent(done: int | None, total: int | None) -> int:
    if not total or done is None:
        return 0
    return max(0, min(100, round(100 * done / total)))


FILTERS: dict[str, Callable[..., Any]] = {
    "size": size,
    "rate": rate,
    "duration": duration,
    "eta": eta,
    "elapsed": elapsed,
    "when": when,
    "stamp": stamp,
    "path": path,
    "percent": percent,
}

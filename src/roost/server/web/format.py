"""Jinja filters: sizes, durations, times and progress as people read them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(value: int | float | None) -> str:
    if value is None:
        return "–"
    amount = float(value)
    for unit in _UNITS:
        if abs(amount) < 1024 or unit == _UNITS[-1]:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} PiB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "–"


def percent(done: int | None, total: int | None) -> int:
    if not total or done is None:
        return 0
    return max(0, min(100, round(100 * done / total)))


FILTERS: dict[str, Callable[..., Any]] = {
    "size": size,
    "duration": duration,
    "when": when,
    "percent": percent,
}

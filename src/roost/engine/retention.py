"""Snapshot retention: decide which snapshots a ``forget`` keeps.

This module is pure: no I/O and no clock reads. It follows restic's
``forget --keep-*`` semantics, which are grandfather-father-son rules.

Rules, applied independently to each *group* of snapshots (e.g. host+paths):

* Snapshots are walked newest first. Equal times are ordered by id ascending,
  so the result never depends on input order.
* ``keep_last=N`` keeps the N newest snapshots.
* Each period rule (``keep_hourly``, ``keep_daily``, ``keep_weekly``,
  ``keep_monthly``, ``keep_yearly``) with value N keeps the newest snapshot of
  each of the N most recent distinct periods *that contain a snapshot*. Periods
  are calendar periods computed in the caller's time zone ``tz``:
  hour ``YYYY-MM-DD HH``, day ``YYYY-MM-DD``, ISO week ``YYYY-Www``, month
  ``YYYY-MM`` and year ``YYYY``. Empty periods are skipped, not counted: a daily
  rule of 7 keeps one snapshot for each of the 7 most recent days that have one.
  On a day when clocks go back, the repeated local hour is two distinct hourly
  periods; their labels carry the UTC offset (``2026-10-25 02 +0200``).
* ``keep_within=D`` keeps every snapshot strictly newer than the group's newest
  snapshot minus D (the newest snapshot, not the current time).
* A snapshot kept by several rules lists every reason, in the order
  last, hourly, daily, weekly, monthly, yearly, within. Forgotten snapshots
  have no reasons.

A policy that keeps nothing by rule is refused with ``ValueError`` so that a
mistyped command line can never delete a whole repository.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import groupby

__all__ = [
    "EMPTY_POLICY_MESSAGE",
    "Decision",
    "RetentionPolicy",
    "SnapshotRef",
    "apply_policy",
    "format_duration",
    "parse_duration",
]

EMPTY_POLICY_MESSAGE = "refusing to forget every snapshot: give at least one --keep-* option"

_UNIT_SECONDS: dict[str, int] = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"(?:\d+[wdhms])+")
_DURATION_PART_RE = re.compile(r"(\d+)([wdhms])")
_DURATION_HELP = "accepted units: s (seconds), m (minutes), h (hours), d (days), w (weeks)"


@dataclass(frozen=True)
class RetentionPolicy:
    """How many snapshots of each kind a ``forget`` keeps; 0 / None disables a rule."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: timedelta | None = None

    def __post_init__(self) -> None:
        for name, value in self._counts():
            if value < 0:
                raise ValueError(f"keep_{name} must not be negative, got {value}")
        if self.keep_within is not None and self.keep_within < timedelta(0):
            raise ValueError(f"keep_within must not be negative, got {self.keep_within}")

    def _counts(self) -> tuple[tuple[str, int], ...]:
        return (
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        )

    def is_empty(self) -> bool:
        """True when no rule keeps anything (callers must then refuse to forget)."""
        return not any(value for _, value in self._counts()) and not self.keep_within

    def describe(self) -> str:
        """Human summary such as ``"last 3, daily 7, weekly 4, within 2d"``."""
        parts = [f"{name} {value}" for name, value in self._counts() if value]
        if self.keep_within:
            parts.append(f"within {format_duration(self.keep_within)}")
        return ", ".join(parts) if parts else "nothing"


@dataclass(frozen=True)
class SnapshotRef:
    """The parts of a snapshot that retention looks at; ``time`` must be timezone-aware."""

    id: str
    time: datetime
    group: str = ""


@dataclass(frozen=True)
class Decision:
    """Whether ``snapshot`` is kept, and every rule that keeps it."""

    snapshot: SnapshotRef
    keep: bool
    reasons: tuple[str, ...]


# A period function maps a local time to (comparable period key, display label).
_PeriodFn = Callable[[datetime], tuple[tuple[int, ...], str]]


def _hour_period(local: datetime) -> tuple[tuple[int, ...], str]:
    key = (local.year, local.month, local.day, local.hour, local.fold)
    label = f"{local:%Y-%m-%d %H}"
    if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
        label += f" {local:%z}"  # repeated hour when clocks go back
    return key, label


def _day_period(local: datetime) -> tuple[tuple[int, ...], str]:
    return (local.year, local.month, local.day), local.date().isoformat()


def _week_period(local: datetime) -> tuple[tuple[int, ...], str]:
    iso = local.isocalendar()
    return (iso.year, iso.week), f"{iso.year}-W{iso.week:02d}"


def _month_period(local: datetime) -> tuple[tuple[int, ...], str]:
    return (local.year, local.month), f"{local:%Y-%m}"


def _year_period(local: datetime) -> tuple[tuple[int, ...], str]:
    return (local.year,), f"{local.year:04d}"


def _period_rules(policy: RetentionPolicy) -> list[tuple[str, int, _PeriodFn]]:
    return [
        ("hourly", policy.keep_hourly, _hour_period),
        ("daily", policy.keep_daily, _day_period),
        ("weekly", policy.keep_weekly, _week_period),
        ("monthly", policy.keep_monthly, _month_period),
        ("yearly", policy.keep_yearly, _year_period),
    ]


def apply_policy(
    snapshots: Sequence[SnapshotRef], policy: RetentionPolicy, tz: tzinfo = UTC
) -> list[Decision]:
    """Decide keep/forget for every snapshot; see the module docstring for the rules.

    Returns one decision per input snapshot, groups in sorted order and newest
    first within a group. Raises ``ValueError`` for an empty policy or a naive time.
    """
    if policy.is_empty():
        raise ValueError(EMPTY_POLICY_MESSAGE)
    for snap in snapshots:
        if snap.time.utcoffset() is None:
            raise ValueError(f"snapshot {snap.id!r} has a naive time; a timezone is required")
    decisions: list[Decision] = []
    by_group = sorted(snapshots, key=lambda s: s.group)
    for _, members in groupby(by_group, key=lambda s: s.group):
        decisions.extend(_decide_group(_newest_first(members), policy, tz))
    return decisions


def _newest_first(snapshots: Iterable[SnapshotRef]) -> list[SnapshotRef]:
    by_id = sorted(snapshots, key=lambda s: s.id)
    return sorted(by_id, key=lambda s: s.time, reverse=True)  # stable: ties stay id-ascending


def _decide_group(snaps: list[SnapshotRef], policy: RetentionPolicy, tz: tzinfo) -> list[Decision]:
    reasons: list[list[str]] = [[] for _ in snaps]
    for index in range(min(policy.keep_last, len(snaps))):
        reasons[index].append(f"last snapshot #{index + 1}")
    for name, count, period in _period_rules(policy):
        _apply_period(snaps, reasons, name, count, period, tz)
    if policy.keep_within:
        _apply_within(snaps, reasons, policy.keep_within)
    return [Decision(s, bool(r), tuple(r)) for s, r in zip(snaps, reasons, strict=True)]


def _apply_period(
    snaps: list[SnapshotRef],
    reasons: list[list[str]],
    name: str,
    count: int,
    period: _PeriodFn,
    tz: tzinfo,
) -> None:
    kept = 0
    last_key: tuple[int, ...] | None = None
    for index, snap in enumerate(snaps):
        if kept >= count:
            return
        key, label = period(snap.time.astimezone(tz))
        if key != last_key:
            kept += 1
            last_key = key
            reasons[index].append(f"{name} snapshot #{kept} ({label})")


def _apply_within(snaps: list[SnapshotRef], reasons: list[list[str]], within: timedelta) -> None:
    if not snaps:
        return
    cutoff = snaps[0].time - within
    reason = f"within {format_duration(within)} of newest"
    for index, snap in enumerate(snaps):
        if snap.time > cutoff:
            reasons[index].append(reason)


def parse_duration(text: str) -> timedelta:
    """Parse ``"30s"``, ``"15m"``, ``"4h"``, ``"7d"``, ``"2w"`` or combinations like ``"1d12h"``."""
    compact = text.strip()
    if not _DURATION_RE.fullmatch(compact):
        raise ValueError(
            f"invalid duration {text!r}: expected e.g. '7d' or '1d12h'; {_DURATION_HELP}"
        )
    seconds = sum(
        int(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART_RE.findall(compact)
    )
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:
        raise ValueError(f"invalid duration {text!r}: too large") from exc


def format_duration(value: timedelta) -> str:
    """Compact form that ``parse_duration`` accepts, e.g. ``"1d12h"``; sub-seconds are dropped."""
    remaining = int(value.total_seconds())
    if remaining < 0:
        raise ValueError(f"cannot format a negative duration: {value}")
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):
        amount, remaining = divmod(remaining, _UNIT_SECONDS[unit])
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"

"""Calendar rules of the scheduler: schedules, backup windows and local wall-clock time.

Everything here is a pure function of its arguments; nothing reads the clock. Every instant
passed in must be timezone-aware and every instant returned is in UTC.

Schedules and windows are written in local wall-clock time of an IANA time zone, and local
times are turned into instants by one rule (`resolve_local`):

* A local time that does not exist (the spring-forward gap) happens at the first valid instant
  after the gap: 02:30 Europe/Berlin on 2026-03-29 runs at 03:00 CEST (01:00 UTC). Several
  slots inside one gap therefore collapse into one run.
* A local time that happens twice (fall back) happens once, at its first occurrence: 02:30
  Europe/Berlin on 2026-10-25 runs at 02:30 CEST (00:30 UTC) and not again an hour later.

croniter 7 is used on naive wall-clock times only. Given a tz-aware start it yields a repeated
local time twice (checked: "30 2 * * *" from 2026-10-24 in Europe/Berlin gives 00:30 and 01:30
UTC on 2026-10-25), which would run a daily backup twice on the fall-back night.

A backup window opens at its local start time and closes at local start + duration, also as
wall-clock time, so "22:00-06:00" closes at 06:00 local even on DST nights (lasting 7 or 9 hours
of real time). A window is half-open: open <= instant < close.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter as _croniter  # type: ignore[import-untyped]

__all__ = [
    "Schedule",
    "Window",
    "daily_maintenance_due",
    "due_runs",
    "iter_runs",
    "next_run",
    "resolve_local",
    "to_utc",
    "zone",
]

SCHEDULE_FORMS = (
    "a cron expression such as '30 1 * * *', or days and times such as "
    "'mon,wed,fri 01:30,13:00', 'daily 02:00' or 'weekdays 22:00'"
)
WINDOW_FORMS = (
    "'HH:MM-HH:MM' such as '22:00-06:00', 'HH:MM+<n>h' such as '22:00+8h', or a length "
    "such as '4h' (opening at the schedule's time of day)"
)
_CRON_HINT = "expected 5 fields (minute hour day-of-month month day-of-week) such as '30 1 * * *'"
_DAY_HINT = (
    "use mon, tue, wed, thu, fri, sat, sun (or a range such as mon-fri), "
    "daily, weekdays or weekends"
)
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_GROUPS = {"daily": range(7), "weekdays": range(5), "weekends": range(5, 7)}
_FULL_DAY = timedelta(hours=24)
_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
_DAYS_TIMES = re.compile(r"(?P<days>[a-z][a-z,\s-]*?)\s+(?P<times>\d[\d:,\s]*)")
_WINDOW_RANGE = re.compile(r"(?P<start>[\d:]+)\s*-\s*(?P<end>[\d:]+)")
_WINDOW_ONLY_LENGTH = re.compile(r"(?:(?P<h>\d+)h)?\s*(?:(?P<m>\d+)m)?")
_WINDOW_LENGTH = re.compile(r"(?P<start>[\d:]+)\s*\+\s*(?:(?P<h>\d+)h)?\s*(?:(?P<m>\d+)m)?")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ValueError that says what is expected if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from exc


def to_utc(instant: datetime, name: str = "instant") -> datetime:
    """`instant` in UTC; ValueError for a naive datetime, whose meaning would be a guess."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {instant!r}")
    return instant.astimezone(UTC)


def resolve_local(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of naive wall-clock `local` in `tz`: gap -> its end, repeat -> first."""
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)  # fold=0: the earlier offset
    if first.astimezone(tz).replace(tzinfo=None) == local:
        return first
    return _gap_end(local, tz)


def _gap_end(local: datetime, tz: ZoneInfo) -> datetime:
    """The transition instant that skipped `local`, found by bisection in whole seconds."""
    low = int(local.replace(tzinfo=tz, fold=1).timestamp())  # read with the later offset
    high = int(local.replace(tzinfo=tz, fold=0).timestamp())  # read with the earlier offset
    later_offset = datetime.fromtimestamp(high, tz).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == later_offset:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _parse_hhmm(text: str, context: str) -> time:
    match = _HHMM.fullmatch(text.strip())
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(
            f"invalid time {text.strip()!r} in {context}: expected HH:MM between 00:00 and 23:59"
        )
    return time(int(match[1]), int(match[2]))


def _day_number(name: str, token: str, context: str) -> int:
    for number, full in enumerate(_DAY_NAMES):
        if name in (full, full[:3]):
            return number
    raise ValueError(f"unknown day {token!r} in {context}: {_DAY_HINT}")


def _parse_day(token: str, context: str) -> set[int]:
    """Day numbers (0=Monday) of one token: a name, a range such as fri-mon, or a group."""
    if token in _DAY_GROUPS:
        return set(_DAY_GROUPS[token])
    first, dash, last = token.partition("-")
    start = _day_number(first, token, context)
    end = _day_number(last, token, context) if dash else start
    return {(start + offset) % 7 for offset in range((end - start) % 7 + 1)}


def _cron_is_valid(expression: str) -> bool:
    fields = expression.split()
    shape_ok = expression.startswith("@") or len(fields) == 5
    return shape_ok and bool(_croniter.is_valid(expression))


def _cron_slots(expression: str, after: datetime) -> Iterator[datetime]:
    """Naive wall-clock times matching `expression`, strictly after naive `after`."""
    iterator = _croniter(expression, after)
    while True:
        slot: datetime = iterator.get_next(datetime)
        yield slot


def _cron_ever_matches(expression: str) -> bool:
    try:
        next(_cron_slots(expression, datetime(2000, 1, 1)))
    except ValueError:  # croniter's CroniterBadDateError: no date within its search horizon
        return False
    return True


@dataclass(frozen=True)
class Schedule:
    """Either a cron expression or days of week + times of day, in the policy's time zone."""

    cron: str | None = None
    days: frozenset[int] = frozenset()  # 0=Monday .. 6=Sunday
    times: tuple[time, ...] = ()  # local wall-clock times
    timezone: str = "UTC"  # IANA name

    @classmethod
    def parse(cls, text: str, timezone: str = "UTC") -> Schedule:
        """A cron expression, or days and times such as "mon,wed,fri 01:30,13:00"."""
        cleaned = " ".join(text.lower().split())
        if not cleaned:
            raise ValueError(f"empty schedule: expected {SCHEDULE_FORMS}")
        if ":" in cleaned:
            schedule = cls._parse_days_times(text, cleaned, timezone)
        elif cleaned.startswith("@") or len(cleaned.split()) == 5:
            schedule = cls(cron=" ".join(text.split()), timezone=timezone)
        else:
            raise ValueError(f"invalid schedule {text!r}: expected {SCHEDULE_FORMS}")
        schedule.validate()
        return schedule

    @classmethod
    def _parse_days_times(cls, text: str, cleaned: str, timezone: str) -> Schedule:
        match = _DAYS_TIMES.fullmatch(cleaned)
        if match is None:
            raise ValueError(f"invalid schedule {text!r}: expected {SCHEDULE_FORMS}")
        context = f"schedule {text!r}"
        days = [_parse_day(token.replace(" ", ""), context) for token in match["days"].split(",")]
        times = {_parse_hhmm(token, context) for token in match["times"].split(",")}
        return cls(
            days=frozenset(set().union(*days)), times=tuple(sorted(times)), timezone=timezone
        )

    def validate(self) -> None:
        """ValueError, saying what to write instead, for a schedule that cannot run."""
        zone(self.timezone)
        if self.cron is not None and (self.days or self.times):
            raise ValueError("a schedule has either a cron expression or days and times, not both")
        if self.cron is not None:
            return self._validate_cron(self.cron)
        if not self.days and not self.times:
            raise ValueError(f"empty schedule: expected {SCHEDULE_FORMS}")
        if not self.days or not self.times:
            raise ValueError("a days-and-times schedule needs at least one day and one time")
        if not self.days <= set(range(7)):
            raise ValueError(f"invalid days {sorted(self.days)}: days are 0 (Monday) to 6 (Sunday)")
        if any(moment.tzinfo is not None for moment in self.times):
            raise ValueError("schedule times are local wall-clock times and carry no tzinfo")
        return None

    @staticmethod
    def _validate_cron(expression: str) -> None:
        if not _cron_is_valid(expression):
            raise ValueError(f"invalid cron expression {expression!r}: {_CRON_HINT}")
        if not _cron_ever_matches(expression):
            raise ValueError(f"cron expression {expression!r} never matches a date")

    def local_slots(self, after: datetime) -> Iterator[datetime]:
        """Naive local wall-clock slots strictly after naive `after`, in order."""
        if self.cron is not None:
            return _cron_slots(self.cron, after)
        return self._day_time_slots(after)

    def _day_time_slots(self, after: datetime) -> Iterator[datetime]:
        day = after.date()
        while True:
            if day.weekday() in self.days:
                slots = (datetime.combine(day, moment) for moment in sorted(self.times))
                yield from (slot for slot in slots if slot > after)
            day += timedelta(days=1)


def iter_runs(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """The scheduled instants strictly after `after`, in UTC, increasing, each once."""
    schedule.validate()
    tz = zone(schedule.timezone)
    last = to_utc(after, "after")
    for slot in schedule.local_slots(last.astimezone(tz).replace(tzinfo=None)):
        instant = resolve_local(slot, tz)
        if instant > last:  # skips a repeated time's second pass and gap slots already run
            last = instant
            yield instant


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The first scheduled instant strictly after `after`, in UTC."""
    return next(iter_runs(schedule, after))


def due_runs(
    schedule: Schedule, last_planned: datetime | None, now: datetime, created: datetime
) -> list[datetime]:
    """Every scheduled instant in (last_planned or created, now], oldest first."""
    limit = to_utc(now, "now")
    runs: list[datetime] = []
    for instant in iter_runs(schedule, last_planned or created):
        if instant > limit:
            break
        runs.append(instant)
    return runs


def _clock(moment: time) -> str:
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


@dataclass(frozen=True)
class Window:
    """Backup window: jobs may start inside it and must end by its close."""

    start: time
    duration: timedelta  # wall-clock length: 22:00 + 8h closes at 06:00 local, DST or not
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        zone(self.timezone)
        if not timedelta(0) < self.duration <= _FULL_DAY:
            raise ValueError(
                f"backup window duration must be more than 0 and at most 24h, got {self.duration}"
            )
        if self.start.tzinfo is not None:
            raise ValueError("a backup window's start is a local wall-clock time with no tzinfo")

    @classmethod
    def parse(cls, text: str, timezone: str = "UTC", schedule: Schedule | None = None) -> Window:
        """A window written "22:00-06:00" (start-end), "22:00+8h" (start+length), or "4h".

        A bare length opens at the schedule's time of day, so ``--schedule "daily 01:30"
        --window 4h`` means 01:30-05:30; it needs a schedule that runs at one time of day.
        """
        cleaned = text.strip().lower()
        context = f"backup window {text!r}"
        only = _WINDOW_ONLY_LENGTH.fullmatch(cleaned)
        if only and (only["h"] or only["m"]):
            length = timedelta(hours=int(only["h"] or 0), minutes=int(only["m"] or 0))
            return cls(start=_single_start(schedule, context), duration=length, timezone=timezone)
        if match := _WINDOW_RANGE.fullmatch(cleaned):
            start, end = _parse_hhmm(match["start"], context), _parse_hhmm(match["end"], context)
            if start == end:
                raise ValueError(
                    f"invalid {context}: start and end are equal; for a window "
                    "that is always open write 'HH:MM+24h'"
                )
            length = (_on_day(end) - _on_day(start)) % _FULL_DAY
        elif (match := _WINDOW_LENGTH.fullmatch(cleaned)) and (match["h"] or match["m"]):
            start = _parse_hhmm(match["start"], context)
            length = timedelta(hours=int(match["h"] or 0), minutes=int(match["m"] or 0))
            if not timedelta(0) < length <= _FULL_DAY:
                raise ValueError(
                    f"invalid {context}: the length must be more than 0 and at most 24h"
                )
        else:
            raise ValueError(f"invalid {context}: expected {WINDOW_FORMS}")
        return cls(start=start, duration=length, timezone=timezone)

    def describe(self) -> str:
        """The window as an admin wrote it, e.g. "22:00-06:00"."""
        if self.duration == _FULL_DAY:
            return f"{_clock(self.start)}+24h"
        return f"{_clock(self.start)}-{_clock((_on_day(self.start) + self.duration).time())}"

    def contains(self, instant: datetime) -> bool:
        """Whether `instant` lies inside an occurrence of the window."""
        return self.closes_at(instant) is not None

    def closes_at(self, instant: datetime) -> datetime | None:
        """The UTC close of the window containing `instant`, or None if outside."""
        moment = to_utc(instant)
        tz = zone(self.timezone)
        today = moment.astimezone(tz).date()
        for day in (today, today - timedelta(days=1)):  # at most 24h long: opened today or before
            opens, closes = self._occurrence(day, tz)
            if opens <= moment < closes:
                return closes
        return None

    def _occurrence(self, day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
        opens = datetime.combine(day, self.start)
        return resolve_local(opens, tz), resolve_local(opens + self.duration, tz)


def _single_start(schedule: Schedule | None, context: str) -> time:
    """The one local time of day at which ``schedule`` runs (looking at two weeks of slots)."""
    if schedule is None:
        raise ValueError(f"invalid {context}: a window given as a length needs a schedule")
    start = datetime(2026, 1, 5)
    times = set()
    for slot in schedule.local_slots(start):
        if slot > start + timedelta(days=14):
            break
        times.add(slot.time())
    if len(times) != 1:
        raise ValueError(
            f"invalid {context}: the schedule runs at {len(times)} times of day, so a length "
            "alone does not say when the window opens; write it as 'HH:MM-HH:MM'"
        )
    return times.pop()


def _on_day(moment: time) -> datetime:
    return datetime.combine(date(2000, 1, 1), moment)


def daily_maintenance_due(
    last_run: datetime | None, now: datetime, at: time, timezone: str
) -> bool:
    """Whether retention and prune, run once a day at local `at`, are due at `now`."""
    moment, tz = to_utc(now, "now"), zone(timezone)
    today = moment.astimezone(tz).date()
    slot = resolve_local(datetime.combine(today, at), tz)
    if slot > moment:
        slot = resolve_local(datetime.combine(today - timedelta(days=1), at), tz)
    return last_run is None or to_utc(last_run, "last_run") < slot

"""Scheduler decisions, table-driven, with explicit instants and an injected clock.

DST dates used: Europe/Berlin springs forward on 2026-03-29 (02:00 CET -> 03:00 CEST) and falls
back on 2026-10-25 (03:00 CEST -> 02:00 CET); America/New_York on 2026-03-08 and 2026-11-01.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.server.scheduler.policy import (
    AgentView,
    DispatchDecision,
    LevelDecision,
    MissedRunDecision,
    Schedule,
    Window,
    agent_state,
    daily_maintenance_due,
    decide_dispatch,
    decide_level,
    due_runs,
    may_start,
    must_stop,
    next_run,
    plan_missed_runs,
    retry_at,
    silent_agents,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
HOUR = timedelta(hours=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- next_run ---------------------------------------------------------------------------------

NEXT_RUN_CASES = [
    # (schedule text, zone, after, expected next run in UTC)
    ("30 1 * * *", "UTC", utc(2026, 1, 10), utc(2026, 1, 10, 1, 30)),
    ("30 1 * * *", "UTC", utc(2026, 1, 10, 1, 30), utc(2026, 1, 11, 1, 30)),
    ("30 1 * * *", "UTC", utc(2026, 1, 10, 1, 29), utc(2026, 1, 10, 1, 30)),
    ("30 1 * * *", BERLIN, utc(2026, 1, 10), utc(2026, 1, 10, 0, 30)),
    ("30 1 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 29, 0, 30)),
    ("30 1 * * *", BERLIN, utc(2026, 3, 29, 1), utc(2026, 3, 29, 23, 30)),
    ("30 1 * * *", BERLIN, utc(2026, 10, 24, 12), utc(2026, 10, 24, 23, 30)),
    ("30 1 * * *", BERLIN, utc(2026, 10, 24, 23, 30), utc(2026, 10, 26, 0, 30)),
    ("30 1 * * *", NEW_YORK, utc(2026, 1, 10), utc(2026, 1, 10, 6, 30)),
    ("30 1 * * *", NEW_YORK, utc(2026, 3, 8), utc(2026, 3, 8, 6, 30)),
    ("30 1 * * *", NEW_YORK, utc(2026, 3, 8, 7), utc(2026, 3, 9, 5, 30)),
    ("30 1 * * *", NEW_YORK, utc(2026, 11, 1), utc(2026, 11, 1, 5, 30)),
    ("30 1 * * *", NEW_YORK, utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)),
    ("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)),
    ("30 2 * * *", BERLIN, utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)),
    ("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30)),
    ("30 2 * * *", BERLIN, utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)),
    ("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), utc(2026, 3, 8, 7)),
    ("daily 02:30", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)),
    ("daily 02:30", BERLIN, utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)),
    ("mon,wed,fri 01:30,13:00", "UTC", utc(2026, 1, 5, 2), utc(2026, 1, 5, 13)),
    ("mon,wed,fri 01:30,13:00", "UTC", utc(2026, 1, 5, 13), utc(2026, 1, 7, 1, 30)),
    ("mon,wed,fri 01:30,13:00", "UTC", utc(2026, 1, 9, 13), utc(2026, 1, 12, 1, 30)),
    ("weekdays 22:00", BERLIN, utc(2026, 1, 9, 21), utc(2026, 1, 12, 21)),
    ("weekdays 22:00", BERLIN, utc(2026, 7, 9, 20), utc(2026, 7, 10, 20)),
    ("weekends 09:00", NEW_YORK, utc(2026, 1, 5), utc(2026, 1, 10, 14)),
]


@pytest.mark.parametrize(
    ("text", "zone", "after", "expected"),
    NEXT_RUN_CASES,
    ids=[f"{t}|{z}|{a:%Y-%m-%dT%H:%M}" for t, z, a, _ in NEXT_RUN_CASES],
)
def test_next_run(text: str, zone: str, after: datetime, expected: datetime) -> None:
    result = next_run(Schedule.parse(text, zone), after)
    assert result == expected
    assert result.tzinfo is UTC


def test_next_run_accepts_any_aware_timezone_and_rejects_naive() -> None:
    schedule = Schedule.parse("30 1 * * *")
    after = utc(2026, 1, 10).astimezone(ZoneInfo(BERLIN))
    assert next_run(schedule, after) == utc(2026, 1, 10, 1, 30)
    with pytest.raises(ValueError, match="after must be a timezone-aware datetime"):
        next_run(schedule, datetime(2026, 1, 10))


# --- due_runs ---------------------------------------------------------------------------------

DUE_CASES = [
    # (schedule, zone, last_planned, now, created, expected)
    (
        "30 2 * * *",
        BERLIN,
        None,
        utc(2026, 3, 31),
        utc(2026, 3, 27),
        [
            utc(2026, 3, 27, 1, 30),
            utc(2026, 3, 28, 1, 30),
            utc(2026, 3, 29, 1),
            utc(2026, 3, 30, 0, 30),
        ],
    ),
    (
        "30 2 * * *",
        BERLIN,
        None,
        utc(2026, 10, 27),
        utc(2026, 10, 23),
        [
            utc(2026, 10, 23, 0, 30),
            utc(2026, 10, 24, 0, 30),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 26, 1, 30),
        ],
    ),
    (
        "*/30 * * * *",
        BERLIN,
        None,
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 0, 15),
        [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30)],
    ),
    (
        "*/30 * * * *",
        BERLIN,
        None,
        utc(2026, 10, 25, 2, 30),
        utc(2026, 10, 24, 23, 45),
        [
            utc(2026, 10, 25, 0),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 2),
            utc(2026, 10, 25, 2, 30),
        ],
    ),
    (
        "30 1 * * *",
        "UTC",
        utc(2026, 1, 10, 1, 30),
        utc(2026, 1, 12, 1, 30),
        utc(2025, 1, 1),
        [utc(2026, 1, 11, 1, 30), utc(2026, 1, 12, 1, 30)],
    ),
    ("30 1 * * *", "UTC", utc(2026, 1, 10, 1, 30), utc(2026, 1, 11, 1, 29), utc(2025, 1, 1), []),
]


@pytest.mark.parametrize(
    ("text", "zone", "last_planned", "now", "created", "expected"),
    DUE_CASES,
    ids=[
        "berlin-spring",
        "berlin-fall",
        "half-hourly-gap",
        "half-hourly-fold",
        "since-last",
        "none",
    ],
)
def test_due_runs(
    text: str,
    zone: str,
    last_planned: datetime | None,
    now: datetime,
    created: datetime,
    expected: list[datetime],
) -> None:
    assert due_runs(Schedule.parse(text, zone), last_planned, now, created) == expected


# --- missed runs ------------------------------------------------------------------------------


def test_server_down_for_three_days_runs_only_the_latest_slot() -> None:
    schedule = Schedule.parse("30 1 * * *")
    down_since, back_at = utc(2026, 1, 10, 2), utc(2026, 1, 13, 2)
    due = due_runs(schedule, utc(2026, 1, 10, 1, 30), back_at, utc(2025, 1, 1))
    assert due == [utc(2026, 1, 11, 1, 30), utc(2026, 1, 12, 1, 30), utc(2026, 1, 13, 1, 30)]
    assert down_since < due[0]
    assert plan_missed_runs(due, back_at, None, timedelta(hours=6)) == [
        MissedRunDecision(
            utc(2026, 1, 11, 1, 30), "skip", "server was not running at the scheduled time"
        ),
        MissedRunDecision(
            utc(2026, 1, 12, 1, 30), "skip", "server was not running at the scheduled time"
        ),
        MissedRunDecision(utc(2026, 1, 13, 1, 30), "run", ""),
    ]


NIGHT = Window.parse("22:00-06:00")
SLOTS = [utc(2026, 1, 10, 23), utc(2026, 1, 11, 23), utc(2026, 1, 12, 23)]
DOWN = "server was not running at the scheduled time"
MISSED_CASES = [
    # (due, now, window, catch_up_limit, expected (action, reason) per slot)
    ([], utc(2026, 1, 13), NIGHT, HOUR, []),
    (SLOTS, utc(2026, 1, 13, 5), NIGHT, 12 * HOUR, [("skip", DOWN), ("skip", DOWN), ("run", "")]),
    (
        SLOTS,
        utc(2026, 1, 13, 6),
        NIGHT,
        12 * HOUR,
        [("skip", DOWN), ("skip", DOWN), ("skip", "missed the backup window")],
    ),
    (
        SLOTS,
        utc(2026, 1, 13, 5),
        NIGHT,
        2 * HOUR,
        [
            ("skip", DOWN),
            ("skip", DOWN),
            ("skip", "server was not running at the scheduled time; too late to catch up"),
        ],
    ),
    (SLOTS[-1:], utc(2026, 1, 13, 1), NIGHT, 2 * HOUR, [("run", "")]),
    (
        SLOTS[::-1],
        utc(2026, 1, 13, 1),
        None,
        2 * HOUR,
        [("skip", DOWN), ("skip", DOWN), ("run", "")],
    ),
    (
        [utc(2026, 1, 12, 12)],
        utc(2026, 1, 12, 12, 1),
        NIGHT,
        HOUR,
        [("skip", "missed the backup window")],
    ),
]


@pytest.mark.parametrize(
    ("due", "now", "window", "limit", "expected"),
    MISSED_CASES,
    ids=[
        "nothing-due",
        "latest-inside-window",
        "window-closed",
        "catch-up-limit",
        "limit-exactly-reached",
        "unsorted-no-window",
        "slot-outside-window",
    ],
)
def test_plan_missed_runs(
    due: list[datetime],
    now: datetime,
    window: Window | None,
    limit: timedelta,
    expected: list[tuple[str, str]],
) -> None:
    decisions = plan_missed_runs(due, now, window, limit)
    assert [d.run_at for d in decisions] == sorted(due)
    assert [(d.action, d.reason) for d in decisions] == expected


# --- windows ----------------------------------------------------------------------------------

WINDOW_CASES = [
    # (window, zone, instant, contains, closes_at)
    ("22:00-06:00", "UTC", utc(2026, 1, 10, 23), True, utc(2026, 1, 11, 6)),
    ("22:00-06:00", "UTC", utc(2026, 1, 11, 1), True, utc(2026, 1, 11, 6)),
    ("22:00-06:00", "UTC", utc(2026, 1, 11, 5, 59), True, utc(2026, 1, 11, 6)),
    ("22:00-06:00", "UTC", utc(2026, 1, 11, 6), False, None),
    ("22:00-06:00", "UTC", utc(2026, 1, 11, 12), False, None),
    ("22:00-06:00", "UTC", utc(2026, 1, 11, 21, 59), False, None),
    ("22:00-06:00", "UTC", utc(2026, 1, 11, 22), True, utc(2026, 1, 12, 6)),
    ("22:00+8h", "UTC", utc(2026, 1, 11, 5, 59), True, utc(2026, 1, 11, 6)),
    ("01:00-05:00", "UTC", utc(2026, 1, 11, 3), True, utc(2026, 1, 11, 5)),
    ("01:00-05:00", "UTC", utc(2026, 1, 11, 0, 59), False, None),
    # spring forward: 22:00 CET (21:00Z) to 06:00 CEST (04:00Z), 7 hours of real time
    ("22:00-06:00", BERLIN, utc(2026, 3, 28, 21), True, utc(2026, 3, 29, 4)),
    ("22:00-06:00", BERLIN, utc(2026, 3, 29, 3, 59), True, utc(2026, 3, 29, 4)),
    ("22:00-06:00", BERLIN, utc(2026, 3, 29, 4), False, None),
    # fall back: 22:00 CEST (20:00Z) to 06:00 CET (05:00Z), 9 hours of real time
    ("22:00-06:00", BERLIN, utc(2026, 10, 24, 19, 59), False, None),
    ("22:00-06:00", BERLIN, utc(2026, 10, 24, 20), True, utc(2026, 10, 25, 5)),
    ("22:00-06:00", BERLIN, utc(2026, 10, 25, 4, 30), True, utc(2026, 10, 25, 5)),
    ("22:00-06:00", BERLIN, utc(2026, 10, 25, 5), False, None),
    # a window opening inside the spring gap opens when the gap ends (03:00 CEST)
    ("02:30+1h", BERLIN, utc(2026, 3, 29, 0, 59), False, None),
    ("02:30+1h", BERLIN, utc(2026, 3, 29, 1), True, utc(2026, 3, 29, 1, 30)),
    ("00:00+24h", "UTC", utc(2026, 1, 11, 13), True, utc(2026, 1, 12)),
]


@pytest.mark.parametrize(
    ("text", "zone", "instant", "inside", "closes"),
    WINDOW_CASES,
    ids=[f"{t}|{z}|{i:%Y-%m-%dT%H:%M}" for t, z, i, _, _ in WINDOW_CASES],
)
def test_window(
    text: str, zone: str, instant: datetime, inside: bool, closes: datetime | None
) -> None:
    window = Window.parse(text, zone)
    assert window.contains(instant) is inside
    assert window.closes_at(instant) == closes


def test_may_start() -> None:
    window = Window.parse("22:00-06:00", BERLIN)
    assert may_start(window, utc(2026, 1, 10, 22)) == (True, "")
    assert may_start(None, utc(2026, 1, 10, 12)) == (True, "")
    assert may_start(window, utc(2026, 1, 10, 12)) == (
        False,
        "outside the backup window 22:00-06:00 (Europe/Berlin)",
    )
    assert may_start(Window.parse("22:00+8h30m"), utc(2026, 1, 10, 12)) == (
        False,
        "outside the backup window 22:00-06:30 (UTC)",
    )


MUST_STOP_CASES = [
    # (window, started, now, must stop)
    (NIGHT, utc(2026, 1, 10, 23), utc(2026, 1, 11, 5, 59), False),
    (NIGHT, utc(2026, 1, 10, 23), utc(2026, 1, 11, 6), True),
    (NIGHT, utc(2026, 1, 10, 23), utc(2026, 1, 11, 23), True),
    (NIGHT, utc(2026, 1, 10, 12), utc(2026, 1, 11, 7), False),
    (None, utc(2026, 1, 10, 23), utc(2026, 1, 12), False),
]


@pytest.mark.parametrize(
    ("window", "started", "now", "expected"),
    MUST_STOP_CASES,
    ids=["before-close", "at-close", "next-night", "started-outside", "no-window"],
)
def test_must_stop(window: Window | None, started: datetime, now: datetime, expected: bool) -> None:
    assert must_stop(window, started, now) is expected


# --- dispatch ---------------------------------------------------------------------------------

IN = (True, "")
OUT = (False, "outside the backup window 22:00-06:00 (Europe/Berlin)")
DISPATCH = DispatchDecision("dispatch", "")
QUEUE = DispatchDecision("queue", "agent offline; queued until it connects")
SET_OFF = DispatchDecision("skip", "backup set disabled")
AGENT_OFF = DispatchDecision("skip", "agent disabled")
OFFLINE = DispatchDecision("skip", "agent offline")
OUTSIDE = DispatchDecision("skip", OUT[1])
DISPATCH_TABLE = [
    # (trigger, agent state, set enabled, window, decision)
    ("now", "online", True, IN, DISPATCH),
    ("now", "online", True, OUT, DISPATCH),
    ("now", "online", False, IN, SET_OFF),
    ("now", "online", False, OUT, SET_OFF),
    ("now", "offline", True, IN, QUEUE),
    ("now", "offline", True, OUT, QUEUE),
    ("now", "offline", False, IN, SET_OFF),
    ("now", "offline", False, OUT, SET_OFF),
    ("now", "disabled", True, IN, AGENT_OFF),
    ("now", "disabled", True, OUT, AGENT_OFF),
    ("now", "disabled", False, IN, AGENT_OFF),
    ("now", "disabled", False, OUT, AGENT_OFF),
    ("schedule", "online", True, IN, DISPATCH),
    ("schedule", "online", True, OUT, OUTSIDE),
    ("schedule", "online", False, IN, SET_OFF),
    ("schedule", "online", False, OUT, SET_OFF),
    ("schedule", "offline", True, IN, OFFLINE),
    ("schedule", "offline", True, OUT, OUTSIDE),
    ("schedule", "offline", False, IN, SET_OFF),
    ("schedule", "offline", False, OUT, SET_OFF),
    ("schedule", "disabled", True, IN, AGENT_OFF),
    ("schedule", "disabled", True, OUT, AGENT_OFF),
    ("schedule", "disabled", False, IN, AGENT_OFF),
    ("schedule", "disabled", False, OUT, AGENT_OFF),
]


@pytest.mark.parametrize(
    ("trigger", "state", "set_enabled", "window_ok", "expected"),
    DISPATCH_TABLE,
    ids=[
        f"{t}-{s}-{'set_on' if e else 'set_off'}-{'in' if w[0] else 'out'}"
        for t, s, e, w, _ in DISPATCH_TABLE
    ],
)
def test_decide_dispatch(
    trigger: str,
    state: str,
    set_enabled: bool,
    window_ok: tuple[bool, str],
    expected: DispatchDecision,
) -> None:
    agent = AgentView(state=state, last_seen=utc(2026, 1, 10))
    assert decide_dispatch(trigger, agent, set_enabled, window_ok) == expected


@pytest.mark.parametrize(("trigger", "state"), [("cron", "online"), ("now", "asleep")])
def test_decide_dispatch_rejects_unknown_values(trigger: str, state: str) -> None:
    with pytest.raises(ValueError, match="unknown trigger"):
        decide_dispatch(trigger, AgentView(state, None), True, IN)


# --- level ------------------------------------------------------------------------------------

SNAP = "a1b2c3d4e5f6"
FIRST = LevelDecision("full", "first backup of this backup set")
UNUSABLE = LevelDecision("full", "no usable previous snapshot")
CHANGED = LevelDecision("full", "the backup set's paths changed")
INCREMENTAL = LevelDecision("incremental", "previous snapshot a1b2c3d4")
LEVEL_CASES = [
    # (previous paths, current paths, previous usable, previous id, decision)
    (None, ["/srv"], True, None, FIRST),
    (None, ["/srv"], False, SNAP, FIRST),
    (["/srv"], ["/srv"], False, SNAP, UNUSABLE),
    (["/srv"], ["/srv", "/home"], False, SNAP, UNUSABLE),
    (["/srv"], ["/srv", "/home"], True, SNAP, CHANGED),
    (["/srv", "/home"], ["/srv"], True, SNAP, CHANGED),
    (["/srv"], ["/srv/"], True, SNAP, CHANGED),
    (["/srv", "/home"], ["/home", "/srv"], True, SNAP, INCREMENTAL),
    (["/srv", "/srv"], ["/srv"], True, SNAP, INCREMENTAL),
    (["/srv"], ["/srv"], True, None, LevelDecision("incremental", "previous snapshot")),
]


@pytest.mark.parametrize(
    ("previous", "current", "usable", "previous_id", "expected"),
    LEVEL_CASES,
    ids=[
        "first",
        "first-even-if-unusable",
        "unusable",
        "unusable-and-changed",
        "path-added",
        "path-removed",
        "paths-compared-verbatim",
        "same-set-other-order",
        "duplicates-ignored",
        "no-id",
    ],
)
def test_decide_level(
    previous: list[str] | None,
    current: list[str],
    usable: bool,
    previous_id: str | None,
    expected: LevelDecision,
) -> None:
    assert decide_level(previous, current, usable, previous_id) == expected


# --- retries ----------------------------------------------------------------------------------

TEN_MIN = timedelta(minutes=10)
RETRY_CASES = [
    # (attempt that failed, max retries, interval, failed at, window, retry at)
    (1, 2, TEN_MIN, utc(2026, 1, 10, 23), None, utc(2026, 1, 10, 23, 10)),
    (2, 2, TEN_MIN, utc(2026, 1, 10, 23), None, utc(2026, 1, 10, 23, 10)),
    (3, 2, TEN_MIN, utc(2026, 1, 10, 23), None, None),
    (1, 0, TEN_MIN, utc(2026, 1, 10, 23), None, None),
    (1, 3, TEN_MIN, utc(2026, 1, 11, 5, 49), NIGHT, utc(2026, 1, 11, 5, 59)),
    (1, 3, TEN_MIN, utc(2026, 1, 11, 5, 50), NIGHT, None),
    (1, 3, TEN_MIN, utc(2026, 1, 11, 5, 55), NIGHT, None),
    (1, 3, TEN_MIN, utc(2026, 1, 11, 12), NIGHT, None),
    (1, 3, 2 * HOUR, utc(2026, 1, 10, 23), NIGHT, utc(2026, 1, 11, 1)),
]


@pytest.mark.parametrize(
    ("attempt", "max_retries", "interval", "failed_at", "window", "expected"),
    RETRY_CASES,
    ids=[
        "first-retry",
        "last-retry",
        "used-up",
        "no-retries",
        "inside-window",
        "at-window-close",
        "after-window-close",
        "failed-outside-window",
        "long-interval-inside",
    ],
)
def test_retry_at(
    attempt: int,
    max_retries: int,
    interval: timedelta,
    failed_at: datetime,
    window: Window | None,
    expected: datetime | None,
) -> None:
    assert retry_at(attempt, max_retries, interval, failed_at, window) == expected


def test_retry_at_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt counts from 1"):
        retry_at(0, 2, TEN_MIN, utc(2026, 1, 10), None)


# --- agents -----------------------------------------------------------------------------------

NOW = utc(2026, 1, 10, 12)
AGENT_CASES = [
    # (last seen, disabled, state) with offline_after = 90 s
    (NOW - timedelta(seconds=90), False, "offline"),
    (NOW - timedelta(seconds=89), False, "online"),
    (NOW, False, "online"),
    (NOW + timedelta(seconds=5), False, "online"),
    (None, False, "offline"),
    (NOW, True, "disabled"),
    (None, True, "disabled"),
]


@pytest.mark.parametrize(
    ("last_seen", "disabled", "expected"),
    AGENT_CASES,
    ids=["exactly-limit", "just-inside", "now", "clock-skew", "never-seen", "disabled", "never"],
)
def test_agent_state(last_seen: datetime | None, disabled: bool, expected: str) -> None:
    assert agent_state(last_seen, disabled, NOW, timedelta(seconds=90)) == expected


def test_silent_agents() -> None:
    seen: dict[str, datetime | None] = {
        "fs-b": NOW - timedelta(days=3, seconds=1),
        "fs-a": None,
        "fs-c": NOW - timedelta(days=3),
        "fs-d": NOW - HOUR,
    }
    assert silent_agents(seen, NOW, timedelta(days=3)) == ["fs-a", "fs-b"]
    assert silent_agents({}, NOW, timedelta(days=3)) == []


MAINTENANCE_CASES = [
    # (last run, now, due) for 03:00 Europe/Berlin (02:00Z in winter)
    (None, utc(2026, 1, 10, 1), True),
    (utc(2026, 1, 9, 2), utc(2026, 1, 10, 1, 59), False),
    (utc(2026, 1, 9, 2), utc(2026, 1, 10, 2), True),
    (utc(2026, 1, 10, 2, 5), utc(2026, 1, 10, 23), False),
    (utc(2026, 1, 8, 2), utc(2026, 1, 10, 1), True),
    (utc(2026, 3, 28, 2), utc(2026, 3, 29, 1), True),
    (utc(2026, 3, 29, 1), utc(2026, 3, 29, 23), False),
]


@pytest.mark.parametrize(
    ("last_run", "now", "expected"),
    MAINTENANCE_CASES,
    ids=["never", "before-slot", "at-slot", "ran-today", "missed-yesterday", "dst-day", "dst-ran"],
)
def test_daily_maintenance_due(last_run: datetime | None, now: datetime, expected: bool) -> None:
    assert daily_maintenance_due(last_run, now, time(3), BERLIN) is expected


# --- parsing ----------------------------------------------------------------------------------

MWF = frozenset({0, 2, 4})
PARSE_CASES = [
    ("30 1 * * *", Schedule(cron="30 1 * * *")),
    ("  30  1 * *   * ", Schedule(cron="30 1 * * *")),
    ("@daily", Schedule(cron="@daily")),
    ("mon,wed,fri 01:30,13:00", Schedule(days=MWF, times=(time(1, 30), time(13)))),
    (" Mon, WED ,friday 13:00, 1:30 ", Schedule(days=MWF, times=(time(1, 30), time(13)))),
    ("daily 02:00", Schedule(days=frozenset(range(7)), times=(time(2),))),
    ("weekdays 22:00", Schedule(days=frozenset(range(5)), times=(time(22),))),
    ("weekends 09:00,09:00", Schedule(days=frozenset({5, 6}), times=(time(9),))),
    ("0 22 * * MON-FRI", Schedule(cron="0 22 * * MON-FRI")),
    ("Mon - Wed 6:05", Schedule(days=frozenset({0, 1, 2}), times=(time(6, 5),))),
    ("fri-mon 23:59", Schedule(days=frozenset({4, 5, 6, 0}), times=(time(23, 59),))),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES, ids=[t for t, _ in PARSE_CASES])
def test_schedule_parse(text: str, expected: Schedule) -> None:
    assert Schedule.parse(text) == expected


FORMS = (
    "a cron expression such as '30 1 * * *', or days and times such as "
    "'mon,wed,fri 01:30,13:00', 'daily 02:00' or 'weekdays 22:00'"
)
DAY_HINT = (
    "use mon, tue, wed, thu, fri, sat, sun (or a range such as mon-fri), "
    "daily, weekdays or weekends"
)
CRON_HINT = "expected 5 fields (minute hour day-of-month month day-of-week) such as '30 1 * * *'"
SCHEDULE_ERRORS = [
    ("", "UTC", f"empty schedule: expected {FORMS}"),
    ("daily", "UTC", f"invalid schedule 'daily': expected {FORMS}"),
    ("1 2 3", "UTC", f"invalid schedule '1 2 3': expected {FORMS}"),
    ("01:30 daily", "UTC", f"invalid schedule '01:30 daily': expected {FORMS}"),
    ("61 1 * * *", "UTC", f"invalid cron expression '61 1 * * *': {CRON_HINT}"),
    ("0 0 31 2 *", "UTC", "cron expression '0 0 31 2 *' never matches a date"),
    ("fry 01:30", "UTC", f"unknown day 'fry' in schedule 'fry 01:30': {DAY_HINT}"),
    (
        "mon 25:00",
        "UTC",
        "invalid time '25:00' in schedule 'mon 25:00': expected HH:MM between 00:00 and 23:59",
    ),
    (
        "daily 02:00",
        "Mars/Olympus",
        "unknown time zone 'Mars/Olympus': use an IANA name such as 'Europe/Berlin' or 'UTC'",
    ),
]


@pytest.mark.parametrize(
    ("text", "zone", "message"), SCHEDULE_ERRORS, ids=[t or "empty" for t, _, _ in SCHEDULE_ERRORS]
)
def test_schedule_parse_errors(text: str, zone: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Schedule.parse(text, zone)
    assert str(caught.value) == message


VALIDATE_ERRORS = [
    (Schedule(), f"empty schedule: expected {FORMS}"),
    (
        Schedule(cron="30 1 * * *", times=(time(1),)),
        "a schedule has either a cron expression or days and times, not both",
    ),
    (
        Schedule(days=frozenset({1})),
        "a days-and-times schedule needs at least one day and one time",
    ),
    (
        Schedule(days=frozenset({7}), times=(time(1),)),
        "invalid days [7]: days are 0 (Monday) to 6 (Sunday)",
    ),
    (Schedule(cron="* * * * * *"), f"invalid cron expression '* * * * * *': {CRON_HINT}"),
]


@pytest.mark.parametrize(
    ("schedule", "message"),
    VALIDATE_ERRORS,
    ids=["empty", "both", "no-times", "bad-day", "six-fields"],
)
def test_schedule_validate_errors(schedule: Schedule, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        schedule.validate()
    assert str(caught.value) == message


WINDOW_PARSE_CASES = [
    ("22:00-06:00", time(22), 8 * HOUR),
    ("22:00 - 06:00", time(22), 8 * HOUR),
    ("22:00+8h", time(22), 8 * HOUR),
    ("22:00+8h30m", time(22), timedelta(hours=8, minutes=30)),
    ("01:00+90m", time(1), timedelta(minutes=90)),
    ("06:00-22:00", time(6), 16 * HOUR),
    ("00:00+24h", time(0), 24 * HOUR),
]


@pytest.mark.parametrize(
    ("text", "start", "duration"), WINDOW_PARSE_CASES, ids=[t for t, _, _ in WINDOW_PARSE_CASES]
)
def test_window_parse(text: str, start: time, duration: timedelta) -> None:
    assert Window.parse(text, BERLIN) == Window(start, duration, BERLIN)


WINDOW_FORMS = (
    "'HH:MM-HH:MM' such as '22:00-06:00', 'HH:MM+<n>h' such as '22:00+8h', or a length "
    "such as '4h' (opening at the schedule's time of day)"
)
LENGTH = "the length must be more than 0 and at most 24h"
HHMM = "expected HH:MM between 00:00 and 23:59"
WINDOW_ERRORS = [
    ("22:00", f"invalid backup window '22:00': expected {WINDOW_FORMS}"),
    ("22:00+", f"invalid backup window '22:00+': expected {WINDOW_FORMS}"),
    ("nightly", f"invalid backup window 'nightly': expected {WINDOW_FORMS}"),
    (
        "24:00-06:00",
        f"invalid time '24:00' in backup window '24:00-06:00': {HHMM}",
    ),
    (
        "22:00-22:00",
        "invalid backup window '22:00-22:00': start and end are equal; "
        "for a window that is always open write 'HH:MM+24h'",
    ),
    ("22:00+25h", f"invalid backup window '22:00+25h': {LENGTH}"),
    ("22:00+0h", f"invalid backup window '22:00+0h': {LENGTH}"),
]


@pytest.mark.parametrize(("text", "message"), WINDOW_ERRORS, ids=[t for t, _ in WINDOW_ERRORS])
def test_window_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Window.parse(text)
    assert str(caught.value) == message


def test_window_constructor_validates() -> None:
    with pytest.raises(ValueError, match="at most 24h, got 1 day, 0:00:01"):
        Window(time(22), timedelta(hours=24, seconds=1))
    with pytest.raises(ValueError, match="unknown time zone 'Nowhere'"):
        Window(time(22), HOUR, "Nowhere")


# --- properties -------------------------------------------------------------------------------

SCHEDULES = [
    "30 1 * * *",
    "30 2 * * *",
    "0 2 * * *",
    "*/15 * * * *",
    "0 */6 * * mon-fri",
    "45 23 * * 0",
    "0 0 1 * *",
    "mon,wed,fri 01:30,02:30",
    "daily 02:00,02:59,03:00",
]
ZONES = ["UTC", BERLIN, NEW_YORK, "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago"]
INSTANTS = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.sampled_from(SCHEDULES),
    zone=st.sampled_from(ZONES),
    first=INSTANTS,
    second=INSTANTS,
)
def test_next_run_is_after_and_monotonic(
    text: str, zone: str, first: datetime, second: datetime
) -> None:
    schedule = Schedule.parse(text, zone)
    early, late = sorted((first, second))
    run_early, run_late = next_run(schedule, early), next_run(schedule, late)
    assert run_early > early
    assert run_late > late
    assert run_early <= run_late
    assert next_run(schedule, max(early, run_early - timedelta(seconds=1))) == run_early


def test_window_given_as_a_length_opens_at_the_schedule_time() -> None:
    schedule = Schedule.parse("daily 01:30", "Europe/Berlin")
    window = Window.parse("4h", "Europe/Berlin", schedule)
    assert (window.start, window.duration) == (time(1, 30), timedelta(hours=4))
    assert window.describe() == "01:30-05:30"
    cron = Window.parse("2h30m", "UTC", Schedule.parse("15 23 * * 1-5"))
    assert cron.describe() == "23:15-01:45"


def test_window_length_needs_a_single_daily_time() -> None:
    twice = Schedule.parse("daily 01:00,13:00")
    with pytest.raises(ValueError) as caught:
        Window.parse("4h", "UTC", twice)
    assert str(caught.value) == (
        "invalid backup window '4h': the schedule runs at 2 times of day, so a length alone "
        "does not say when the window opens; write it as 'HH:MM-HH:MM'"
    )
    with pytest.raises(ValueError) as caught:
        Window.parse("4h", "UTC")
    assert (
        str(caught.value)
        == "invalid backup window '4h': a window given as a length needs a schedule"
    )

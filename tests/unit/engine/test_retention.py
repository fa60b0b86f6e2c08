"""Tests for roost.engine.retention: restic-style keep rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.engine.retention import (
    EMPTY_POLICY_MESSAGE,
    Decision,
    RetentionPolicy,
    SnapshotRef,
    apply_policy,
    format_duration,
    parse_duration,
)

BERLIN = ZoneInfo("Europe/Berlin")
AUCKLAND = ZoneInfo("Pacific/Auckland")


def snap(snap_id: str, when: str, group: str = "") -> SnapshotRef:
    """A snapshot at an ISO-8601 time (a trailing Z means UTC)."""
    return SnapshotRef(id=snap_id, time=datetime.fromisoformat(when), group=group)


def kept(decisions: list[Decision]) -> dict[str, tuple[str, ...]]:
    return {d.snapshot.id: d.reasons for d in decisions if d.keep}


@dataclass(frozen=True)
class Case:
    name: str
    snapshots: list[SnapshotRef]
    policy: RetentionPolicy
    expected: dict[str, tuple[str, ...]]
    tz: tzinfo = UTC
    order: list[str] = field(default_factory=list)  # expected output id order, if checked


def _ten_days() -> list[SnapshotRef]:
    """Three snapshots a day, 2026-11-16 .. 2026-11-25, ids like d25-17."""
    return [
        snap(f"d{day}-{hour:02d}", f"2026-11-{day}T{hour:02d}:00:00Z")
        for day in range(16, 26)
        for hour in (1, 9, 17)
    ]


CASES = [
    Case(
        name="keep_last only",
        snapshots=[snap(f"s{i}", f"2026-11-2{i}T10:00:00Z") for i in range(1, 6)],
        policy=RetentionPolicy(keep_last=3),
        expected={
            "s5": ("last snapshot #1",),
            "s4": ("last snapshot #2",),
            "s3": ("last snapshot #3",),
        },
        order=["s5", "s4", "s3", "s2", "s1"],
    ),
    Case(
        name="daily over 10 days keeps the newest of each of the 7 latest days",
        snapshots=_ten_days(),
        policy=RetentionPolicy(keep_daily=7),
        expected={
            "d25-17": ("daily snapshot #1 (2026-11-25)",),
            "d24-17": ("daily snapshot #2 (2026-11-24)",),
            "d23-17": ("daily snapshot #3 (2026-11-23)",),
            "d22-17": ("daily snapshot #4 (2026-11-22)",),
            "d21-17": ("daily snapshot #5 (2026-11-21)",),
            "d20-17": ("daily snapshot #6 (2026-11-20)",),
            "d19-17": ("daily snapshot #7 (2026-11-19)",),
        },
    ),
    Case(
        name="daily skips days without snapshots (calendar periods, like restic)",
        snapshots=[
            snap("a", "2026-11-01T10:00:00Z"),
            snap("b", "2026-11-10T10:00:00Z"),
            snap("c", "2026-11-10T08:00:00Z"),
            snap("d", "2026-11-20T10:00:00Z"),
        ],
        policy=RetentionPolicy(keep_daily=2),
        expected={
            "d": ("daily snapshot #1 (2026-11-20)",),
            "b": ("daily snapshot #2 (2026-11-10)",),
        },
    ),
    Case(
        # 2026 has 53 ISO weeks: Mon 2026-12-28 .. Sun 2027-01-03 is 2026-W53.
        name="weekly across the 2026-W53 / 2027-W01 year boundary",
        snapshots=[
            snap("dec20", "2026-12-20T12:00:00Z"),  # 2026-W51
            snap("dec23", "2026-12-23T12:00:00Z"),  # 2026-W52
            snap("dec27", "2026-12-27T12:00:00Z"),  # 2026-W52 (Sunday)
            snap("dec29", "2026-12-29T12:00:00Z"),  # 2026-W53
            snap("jan02", "2027-01-02T12:00:00Z"),  # 2026-W53
            snap("jan03", "2027-01-03T12:00:00Z"),  # 2026-W53 (Sunday)
            snap("jan05", "2027-01-05T12:00:00Z"),  # 2027-W01
            snap("jan11", "2027-01-11T12:00:00Z"),  # 2027-W02
        ],
        policy=RetentionPolicy(keep_weekly=4),
        expected={
            "jan11": ("weekly snapshot #1 (2027-W02)",),
            "jan05": ("weekly snapshot #2 (2027-W01)",),
            "jan03": ("weekly snapshot #3 (2026-W53)",),
            "dec27": ("weekly snapshot #4 (2026-W52)",),
        },
    ),
    Case(
        name="monthly and yearly overlap on the same snapshots",
        snapshots=[
            snap("2025-11", "2025-11-15T12:00:00Z"),
            snap("2025-12a", "2025-12-20T12:00:00Z"),
            snap("2025-12b", "2025-12-31T12:00:00Z"),
            snap("2026-01", "2026-01-10T12:00:00Z"),
            snap("2026-02a", "2026-02-01T12:00:00Z"),
            snap("2026-02b", "2026-02-14T12:00:00Z"),
        ],
        policy=RetentionPolicy(keep_monthly=3, keep_yearly=2),
        expected={
            "2026-02b": ("monthly snapshot #1 (2026-02)", "yearly snapshot #1 (2026)"),
            "2026-01": ("monthly snapshot #2 (2026-01)",),
            "2025-12b": ("monthly snapshot #3 (2025-12)", "yearly snapshot #2 (2025)"),
        },
    ),
    Case(
        name="last, daily and weekly reasons on one snapshot",
        snapshots=[
            snap("n1", "2026-11-25T18:00:00Z"),
            snap("n2", "2026-11-25T06:00:00Z"),
            snap("n3", "2026-11-24T06:00:00Z"),
            snap("n4", "2026-11-20T06:00:00Z"),
        ],
        policy=RetentionPolicy(keep_last=1, keep_daily=2, keep_weekly=2),
        expected={
            "n1": (
                "last snapshot #1",
                "daily snapshot #1 (2026-11-25)",
                "weekly snapshot #1 (2026-W48)",
            ),
            "n3": ("daily snapshot #2 (2026-11-24)",),
            "n4": ("weekly snapshot #2 (2026-W47)",),
        },
    ),
    Case(
        name="daily in UTC: 23:30 UTC belongs to the UTC day",
        snapshots=[
            snap("early", "2026-11-24T10:00:00Z"),
            snap("late", "2026-11-24T23:30:00Z"),
            snap("next", "2026-11-25T05:00:00Z"),
        ],
        policy=RetentionPolicy(keep_daily=2),
        expected={
            "next": ("daily snapshot #1 (2026-11-25)",),
            "late": ("daily snapshot #2 (2026-11-24)",),
        },
    ),
    Case(
        # Auckland is UTC+13 in November: 23:30 UTC on the 24th is 12:30 on the 25th.
        name="daily in Pacific/Auckland: 23:30 UTC is the next local day",
        snapshots=[
            snap("early", "2026-11-24T10:00:00Z"),  # 2026-11-24 23:00 NZDT
            snap("late", "2026-11-24T23:30:00Z"),  # 2026-11-25 12:30 NZDT
            snap("next", "2026-11-25T05:00:00Z"),  # 2026-11-25 18:00 NZDT
        ],
        policy=RetentionPolicy(keep_daily=2),
        tz=AUCKLAND,
        expected={
            "next": ("daily snapshot #1 (2026-11-25)",),
            "early": ("daily snapshot #2 (2026-11-24)",),
        },
    ),
    Case(
        # Berlin is UTC+1 in winter: 23:30 UTC on the 24th is 00:30 on the 25th.
        name="daily in Europe/Berlin: 23:30 UTC is the next local day",
        snapshots=[
            snap("early", "2026-11-24T10:00:00Z"),
            snap("late", "2026-11-24T23:30:00Z"),
        ],
        policy=RetentionPolicy(keep_daily=2),
        tz=BERLIN,
        expected={
            "late": ("daily snapshot #1 (2026-11-25)",),
            "early": ("daily snapshot #2 (2026-11-24)",),
        },
    ),
    Case(
        # 2026-03-29: Berlin springs forward at 01:00 UTC (02:00 CET -> 03:00 CEST).
        name="daily on the Europe/Berlin spring-forward day",
        snapshots=[
            snap("sat", "2026-03-28T22:30:00Z"),  # 2026-03-28 23:30 CET
            snap("sun-cet", "2026-03-28T23:30:00Z"),  # 2026-03-29 00:30 CET
            snap("sun-cest", "2026-03-29T21:30:00Z"),  # 2026-03-29 23:30 CEST
            snap("mon", "2026-03-29T22:30:00Z"),  # 2026-03-30 00:30 CEST
        ],
        policy=RetentionPolicy(keep_daily=3),
        tz=BERLIN,
        expected={
            "mon": ("daily snapshot #1 (2026-03-30)",),
            "sun-cest": ("daily snapshot #2 (2026-03-29)",),
            "sat": ("daily snapshot #3 (2026-03-28)",),
        },
    ),
    Case(
        # 2026-10-25: Berlin falls back at 01:00 UTC; local 02:xx happens twice.
        name="hourly on the Europe/Berlin fall-back day: the repeated hour is two periods",
        snapshots=[
            snap("cest-0215", "2026-10-25T00:15:00Z"),  # 02:15 CEST
            snap("cest-0245", "2026-10-25T00:45:00Z"),  # 02:45 CEST
            snap("cet-0230", "2026-10-25T01:30:00Z"),  # 02:30 CET
            snap("cet-0330", "2026-10-25T02:30:00Z"),  # 03:30 CET
        ],
        policy=RetentionPolicy(keep_hourly=3),
        tz=BERLIN,
        expected={
            "cet-0330": ("hourly snapshot #1 (2026-10-25 03)",),
            "cet-0230": ("hourly snapshot #2 (2026-10-25 02 +0100)",),
            "cest-0245": ("hourly snapshot #3 (2026-10-25 02 +0200)",),
        },
    ),
    Case(
        name="groups are isolated and emitted in sorted order",
        snapshots=[
            snap("b-old", "2026-01-01T00:00:00Z", group="host-b"),
            snap("a-old", "2026-11-01T00:00:00Z", group="host-a"),
            snap("b-new", "2026-02-01T00:00:00Z", group="host-b"),
            snap("a-new", "2026-11-02T00:00:00Z", group="host-a"),
        ],
        policy=RetentionPolicy(keep_last=1),
        expected={"a-new": ("last snapshot #1",), "b-new": ("last snapshot #1",)},
        order=["a-new", "a-old", "b-new", "b-old"],
    ),
    Case(
        name="keep_within is relative to the newest snapshot and strict at the edge",
        snapshots=[
            snap("newest", "2026-11-25T12:00:00Z"),
            snap("inside", "2026-11-23T12:00:01Z"),
            snap("edge", "2026-11-23T12:00:00Z"),
            snap("outside", "2026-11-20T12:00:00Z"),
        ],
        policy=RetentionPolicy(keep_within=timedelta(days=2)),
        expected={
            "newest": ("within 2d of newest",),
            "inside": ("within 2d of newest",),
        },
    ),
    Case(
        name="keep_within combined with keep_last lists both reasons",
        snapshots=[
            snap("new", "2026-11-25T12:00:00Z"),
            snap("mid", "2026-11-25T00:00:00Z"),
            snap("old", "2026-11-01T00:00:00Z"),
        ],
        policy=RetentionPolicy(keep_last=1, keep_within=parse_duration("1d12h")),
        expected={
            "new": ("last snapshot #1", "within 1d12h of newest"),
            "mid": ("within 1d12h of newest",),
        },
    ),
    Case(
        name="fewer snapshots than N keeps them all",
        snapshots=[
            snap("x", "2026-11-25T12:00:00Z"),
            snap("y", "2026-11-24T12:00:00Z"),
        ],
        policy=RetentionPolicy(keep_last=10, keep_daily=10, keep_yearly=5),
        expected={
            "x": (
                "last snapshot #1",
                "daily snapshot #1 (2026-11-25)",
                "yearly snapshot #1 (2026)",
            ),
            "y": ("last snapshot #2", "daily snapshot #2 (2026-11-24)"),
        },
    ),
    Case(
        name="equal times are ordered by id ascending",
        snapshots=[
            snap("zz", "2026-11-25T12:00:00Z"),
            snap("aa", "2026-11-25T12:00:00Z"),
            snap("mm", "2026-11-25T13:00:00+01:00"),  # same instant
        ],
        policy=RetentionPolicy(keep_last=1, keep_daily=1),
        expected={"aa": ("last snapshot #1", "daily snapshot #1 (2026-11-25)")},
        order=["aa", "mm", "zz"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_apply_policy(case: Case) -> None:
    decisions = apply_policy(case.snapshots, case.policy, tz=case.tz)

    assert kept(decisions) == case.expected
    assert sorted(d.snapshot.id for d in decisions) == sorted(s.id for s in case.snapshots)
    assert all(d.keep == bool(d.reasons) for d in decisions)
    if case.order:
        assert [d.snapshot.id for d in decisions] == case.order


def test_output_is_newest_first_within_each_group() -> None:
    decisions = apply_policy(_ten_days()[::-1], RetentionPolicy(keep_last=1))
    times = [d.snapshot.time for d in decisions]
    assert times == sorted(times, reverse=True)


def test_no_snapshots_gives_no_decisions() -> None:
    assert apply_policy([], RetentionPolicy(keep_last=1)) == []


@pytest.mark.parametrize(
    "policy",
    [RetentionPolicy(), RetentionPolicy(keep_within=timedelta(0))],
    ids=["defaults", "zero keep_within"],
)
def test_empty_policy_is_refused_with_exact_message(policy: RetentionPolicy) -> None:
    assert policy.is_empty()
    with pytest.raises(ValueError) as excinfo:
        apply_policy([snap("a", "2026-11-25T12:00:00Z")], policy)
    assert str(excinfo.value) == (
        "refusing to forget every snapshot: give at least one --keep-* option"
    )
    assert str(excinfo.value) == EMPTY_POLICY_MESSAGE


@pytest.mark.parametrize(
    "field_name",
    ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"],
)
def test_negative_counts_are_rejected(field_name: str) -> None:
    with pytest.raises(ValueError, match=f"^{field_name} must not be negative, got -1$"):
        RetentionPolicy(**{field_name: -1})  # type: ignore[arg-type]


def test_negative_keep_within_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^keep_within must not be negative"):
        RetentionPolicy(keep_within=timedelta(seconds=-1))


def test_naive_snapshot_time_is_rejected() -> None:
    naive = SnapshotRef(id="n", time=datetime(2026, 11, 25, 12))
    with pytest.raises(ValueError, match="'n' has a naive time"):
        apply_policy([naive], RetentionPolicy(keep_last=1))


@pytest.mark.parametrize(
    ("policy", "empty", "text"),
    [
        (RetentionPolicy(), True, "nothing"),
        (
            RetentionPolicy(keep_last=3, keep_daily=7, keep_weekly=4),
            False,
            "last 3, daily 7, weekly 4",
        ),
        (
            RetentionPolicy(keep_hourly=24, keep_monthly=6, keep_yearly=2),
            False,
            "hourly 24, monthly 6, yearly 2",
        ),
        (RetentionPolicy(keep_within=timedelta(days=1, hours=12)), False, "within 1d12h"),
        (
            RetentionPolicy(keep_yearly=1, keep_within=timedelta(weeks=2)),
            False,
            "yearly 1, within 14d",
        ),
    ],
)
def test_is_empty_and_describe(policy: RetentionPolicy, empty: bool, text: str) -> None:
    assert policy.is_empty() is empty
    assert policy.describe() == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("4h", timedelta(hours=4)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("0s", timedelta(0)),
        (" 90m ", timedelta(minutes=90)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "7", "d", "7x", "1.5h", "-1d", "7D", "1d 12h", "7 days", "1y", "99999999999w"],
)
def test_parse_duration_rejects_with_unit_list(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))) as excinfo:
        parse_duration(text)
    if text != "99999999999w":
        assert "s (seconds), m (minutes), h (hours), d (days), w (weeks)" in str(excinfo.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(days=1, hours=12), "1d12h"),
        (timedelta(days=14, minutes=1, seconds=2), "14d1m2s"),
    ],
)
def test_format_duration_round_trips(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


# --- properties -----------------------------------------------------------------------------

ZONES: list[tzinfo] = [UTC, BERLIN, AUCKLAND, ZoneInfo("America/St_Johns")]

snapshot_lists = st.lists(
    st.builds(
        SnapshotRef,
        id=st.text("abcdef0123", min_size=1, max_size=6),
        time=st.datetimes(
            min_value=datetime(2024, 1, 1),
            max_value=datetime(2028, 12, 31),
            timezones=st.sampled_from(ZONES),
        ),
        group=st.sampled_from(["", "host-a", "host-b"]),
    ),
    max_size=40,
    unique_by=lambda s: s.id,
)

counts = st.integers(min_value=0, max_value=6)
policies = st.builds(
    RetentionPolicy,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
    keep_within=st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=90)),
).filter(lambda p: not p.is_empty())


@settings(max_examples=300, deadline=None)
@given(snapshots=snapshot_lists, policy=policies, tz=st.sampled_from(ZONES))
def test_newest_of_every_group_is_always_kept(
    snapshots: list[SnapshotRef], policy: RetentionPolicy, tz: tzinfo
) -> None:
    decisions = apply_policy(snapshots, policy, tz)
    assert len(decisions) == len(snapshots)
    for group in {s.group for s in snapshots}:
        members = [d for d in decisions if d.snapshot.group == group]
        newest = max(members, key=lambda d: d.snapshot.time)
        assert members[0].snapshot.time == newest.snapshot.time
        assert members[0].keep


@settings(max_examples=300, deadline=None)
@given(data=st.data(), snapshots=snapshot_lists, policy=policies, tz=st.sampled_from(ZONES))
def test_apply_policy_is_deterministic_under_permutation(
    data: st.DataObject, snapshots: list[SnapshotRef], policy: RetentionPolicy, tz: tzinfo
) -> None:
    shuffled = data.draw(st.permutations(snapshots))
    assert apply_policy(shuffled, policy, tz) == apply_policy(snapshots, policy, tz)


@settings(max_examples=200, deadline=None)
@given(snapshots=snapshot_lists, policy=policies)
def test_count_rules_never_keep_more_than_their_sum(
    snapshots: list[SnapshotRef], policy: RetentionPolicy
) -> None:
    decisions = apply_policy(snapshots, policy)
    limit = sum(
        [
            policy.keep_last,
            policy.keep_hourly,
            policy.keep_daily,
            policy.keep_weekly,
            policy.keep_monthly,
            policy.keep_yearly,
        ]
    )
    for group in {s.group for s in snapshots}:
        members = [d for d in decisions if d.snapshot.group == group]
        by_count = [d for d in members if any("within" not in r for r in d.reasons)]
        assert len(by_count) <= limit

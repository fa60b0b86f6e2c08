"""The scheduler's decisions, as pure functions of state and an injected `now`.

Nothing here does I/O or reads the clock: the scheduler loop gathers the state, asks these
functions, and records what they answer (with the reason, so an admin sees why).

Rules, in the order they are applied:

* Agent state: "disabled" if the admin disabled it; "offline" when it has never been seen or
  when `last_seen + offline_after <= now` (exactly at the limit counts as offline); otherwise
  "online".
* Dispatch (reference workflow step 2): agent disabled -> skip "agent disabled"; backup set
  disabled -> skip "backup set disabled"; a scheduled job outside the backup window -> skip with
  the window's reason (backup-now ignores the window); agent offline -> backup-now is queued
  until the agent connects, a scheduled job is skipped "agent offline"; else dispatch.
* Level (step 3): no previous snapshot -> full; previous one deleted or corrupt -> full; the
  set's paths changed (compared as sets) -> full; else incremental on the previous snapshot.
* Missed runs (the server was down): only the latest missed slot runs, if its backup window is
  still open and it is at most `catch_up_limit` old; every older slot is skipped with "server
  was not running at the scheduled time".
* Window: a job may start inside the window; it must stop when the window it started in
  closes. A job started outside any window (backup-now) is never stopped by the window.
* Retries: `attempt` is the 1-based number of the attempt that just failed, so a job with
  `max_retries` = 2 runs at most 3 times; each retry is `interval` after the failure and must
  start before the window the failure happened in closes.
* Silent agents: never seen, or last seen more than `silent_after` ago (strictly).

Calendar rules (schedules, windows, time zones, DST) live in `schedule.py` and are re-exported
here, so callers import every decision from this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from roost.server.scheduler.schedule import (
    Schedule,
    Window,
    daily_maintenance_due,
    due_runs,
    next_run,
    to_utc,
)

__all__ = [
    "AGENT_DISABLED",
    "AGENT_OFFLINE",
    "AGENT_OFFLINE_QUEUED",
    "MISSED_CATCH_UP_LIMIT",
    "MISSED_SERVER_DOWN",
    "MISSED_WINDOW",
    "SET_DISABLED",
    "AgentView",
    "DispatchDecision",
    "LevelDecision",
    "MissedRunDecision",
    "Schedule",
    "Window",
    "agent_state",
    "daily_maintenance_due",
    "decide_dispatch",
    "decide_level",
    "due_runs",
    "may_start",
    "must_stop",
    "next_run",
    "plan_missed_runs",
    "retry_at",
    "silent_agents",
]

AgentState = Literal["online", "offline", "disabled"]
DispatchAction = Literal["dispatch", "queue", "skip"]
Level = Literal["full", "incremental"]
MissedAction = Literal["run", "skip"]

AGENT_DISABLED = "agent disabled"
AGENT_OFFLINE = "agent offline"
AGENT_OFFLINE_QUEUED = "agent offline; queued until it connects"
SET_DISABLED = "backup set disabled"
MISSED_SERVER_DOWN = "server was not running at the scheduled time"
MISSED_WINDOW = "missed the backup window"
MISSED_CATCH_UP_LIMIT = "server was not running at the scheduled time; too late to catch up"
_TRIGGERS = ("now", "schedule")
_STATES = ("online", "offline", "disabled")


@dataclass(frozen=True)
class AgentView:
    state: str  # "online" | "offline" | "disabled"
    last_seen: datetime | None


@dataclass(frozen=True)
class DispatchDecision:
    action: DispatchAction
    reason: str


@dataclass(frozen=True)
class LevelDecision:
    level: Level
    reason: str


@dataclass(frozen=True)
class MissedRunDecision:
    run_at: datetime
    action: MissedAction
    reason: str


def agent_state(
    last_seen: datetime | None, disabled: bool, now: datetime, offline_after: timedelta
) -> AgentState:
    """Disabled, online (seen less than `offline_after` ago) or offline."""
    if disabled:
        return "disabled"
    if last_seen is None or to_utc(last_seen, "last_seen") + offline_after <= to_utc(now, "now"):
        return "offline"
    return "online"


def decide_dispatch(
    trigger: str, agent: AgentView, set_enabled: bool, window_ok: tuple[bool, str]
) -> DispatchDecision:
    """What to do with a backup request: trigger "now" (backup-now) or "schedule"."""
    if trigger not in _TRIGGERS or agent.state not in _STATES:
        raise ValueError(f"unknown trigger {trigger!r} or agent state {agent.state!r}")
    if agent.state == "disabled":
        return DispatchDecision("skip", AGENT_DISABLED)
    if not set_enabled:
        return DispatchDecision("skip", SET_DISABLED)
    if trigger == "schedule" and not window_ok[0]:
        return DispatchDecision("skip", window_ok[1])
    if agent.state == "offline" and trigger == "now":
        return DispatchDecision("queue", AGENT_OFFLINE_QUEUED)
    if agent.state == "offline":
        return DispatchDecision("skip", AGENT_OFFLINE)
    return DispatchDecision("dispatch", "")


def decide_level(
    previous_snapshot_paths: list[str] | None,
    current_paths: list[str],
    previous_usable: bool,
    previous_id: str | None = None,
) -> LevelDecision:
    """Full or incremental, with the reason shown in the job log."""
    if previous_snapshot_paths is None:
        return LevelDecision("full", "first backup of this backup set")
    if not previous_usable:
        return LevelDecision("full", "no usable previous snapshot")
    if set(previous_snapshot_paths) != set(current_paths):
        return LevelDecision("full", "the backup set's paths changed")
    short = f" {previous_id[:8]}" if previous_id else ""
    return LevelDecision("incremental", f"previous snapshot{short}")


def plan_missed_runs(
    due: list[datetime], now: datetime, window: Window | None, catch_up_limit: timedelta
) -> list[MissedRunDecision]:
    """One decision per due slot, oldest first: at most the latest one runs."""
    if not due:
        return []
    *older, latest = sorted(to_utc(slot, "due slot") for slot in due)
    decisions = [MissedRunDecision(slot, "skip", MISSED_SERVER_DOWN) for slot in older]
    return [*decisions, _plan_latest(latest, to_utc(now, "now"), window, catch_up_limit)]


def _plan_latest(
    slot: datetime, now: datetime, window: Window | None, catch_up_limit: timedelta
) -> MissedRunDecision:
    closes = window.closes_at(slot) if window is not None else None
    if window is not None and (closes is None or closes <= now):
        return MissedRunDecision(slot, "skip", MISSED_WINDOW)
    if now - slot > catch_up_limit:
        return MissedRunDecision(slot, "skip", MISSED_CATCH_UP_LIMIT)
    return MissedRunDecision(slot, "run", "")


def may_start(window: Window | None, now: datetime) -> tuple[bool, str]:
    """(True, "") inside the window or without one, else (False, the reason)."""
    if window is None or window.contains(now):
        return True, ""
    return False, f"outside the backup window {window.describe()} ({window.timezone})"


def must_stop(window: Window | None, started: datetime, now: datetime) -> bool:
    """Whether the window the job started in has closed."""
    closes = window.closes_at(started) if window is not None else None
    return closes is not None and to_utc(now, "now") >= closes


def retry_at(
    attempt: int,
    max_retries: int,
    interval: timedelta,
    failed_at: datetime,
    window: Window | None,
) -> datetime | None:
    """When to retry a failed scheduled job, or None when it is not retried."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1 (the first run), got {attempt}")
    if attempt > max_retries:
        return None
    retry = to_utc(failed_at, "failed_at") + interval
    if window is None:
        return retry
    closes = window.closes_at(failed_at)
    return retry if closes is not None and retry < closes else None


def silent_agents(
    last_seen: dict[str, datetime | None], now: datetime, silent_after: timedelta
) -> list[str]:
    """Names of agents never seen or silent for more than `silent_after`, sorted."""
    moment = to_utc(now, "now")
    return sorted(
        name
        for name, seen in last_seen.items()
        if seen is None or moment - to_utc(seen, f"last_seen[{name!r}]") > silent_after
    )

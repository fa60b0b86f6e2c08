"""The scheduler's background task: every few seconds, one ``scheduler_tick``.

The tick takes ``now`` from its caller, so tests drive it with any clock they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

from roost.server.catalog.queries import orgs
from roost.server.maintenance import MaintenanceReport, run_maintenance
from roost.server.scheduler.planning import PlanReport, plan
from roost.server.scheduler.schedule import daily_maintenance_due
from roost.server.state import ServerState

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    plan: PlanReport
    maintenance: list[asyncio.Task[MaintenanceReport]] = field(default_factory=list)


async def scheduler_tick(state: ServerState, now: datetime) -> TickReport:
    """One pass: plan due slots, retries and windows; start nightly maintenance when due."""
    report = TickReport(await asyncio.to_thread(plan, state, now))
    for agent_id in report.plan.agents_to_wake:
        state.wakeups.notify(agent_id)
    for org_id in await asyncio.to_thread(_claim_maintenance, state, now):
        task = asyncio.create_task(asyncio.to_thread(run_maintenance, state, org_id))
        report.maintenance.append(task)
        state.background.add(task)
        task.add_done_callback(state.background.discard)
    return report


def _claim_maintenance(state: ServerState, now: datetime) -> list[str]:
    """Organisations whose maintenance is due and that this replica claimed."""
    at = state.settings.maintenance_at
    claimed = []
    for org_id, last in _org_maintenance_times(state):
        if not daily_maintenance_due(last, now, at, state.settings.maintenance_timezone):
            continue
        with state.db.session() as session:
            if orgs.claim_maintenance(session, org_id, last, now):
                claimed.append(org_id)
    return claimed


def _org_maintenance_times(state: ServerState) -> list[tuple[str, datetime | None]]:
    with state.db.read_session() as session:
        return [(o.id, o.last_maintenance_at) for o in orgs.list_all(session)]


async def run_scheduler(state: ServerState, stop: asyncio.Event) -> None:
    """Tick until ``stop`` is set; a failing tick is logged and the next one tries again."""
    while not stop.is_set():
        try:
            await scheduler_tick(state, state.clock())
        except Exception:
            log.exception("scheduler tick failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=state.settings.scheduler_interval_seconds)

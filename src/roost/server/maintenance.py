"""Nightly maintenance of an organisation's repository: retention for every set, then prune.

Prune never blocks backups (see docs/design.md, "Prune without an exclusive lock"), so this
runs while agents back up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from roost.engine.prune import PruneBlocked, PruneReport, prune
from roost.errors import RoostError
from roost.server.catalog.queries import policies as policy_queries
from roost.server.catalog.queries import sets as set_queries
from roost.server.retention import apply_retention
from roost.server.state import ServerState

log = logging.getLogger(__name__)


@dataclass
class MaintenanceReport:
    forgotten: dict[str, list[str]] = field(default_factory=dict)  # set name -> snapshot ids
    prune: PruneReport | None = None
    errors: list[str] = field(default_factory=list)


def run_maintenance(state: ServerState, org_id: str) -> MaintenanceReport:
    """Blocking: call it in a worker thread."""
    report = MaintenanceReport()
    try:
        repo = state.repos.repository(org_id)
    except RoostError as exc:
        report.errors.append(f"cannot open the repository: {exc}")
        log.error("maintenance of organisation %s: %s", org_id, report.errors[-1])
        return report
    with state.db.read_session() as session:
        targets = [
            (s.id, s.name, p)
            for s in set_queries.list_for_org(session, org_id)
            if s.policy_id and (p := policy_queries.get(session, s.policy_id)) is not None
        ]
    for set_id, name, policy in targets:
        try:
            report.forgotten[name] = apply_retention(repo, set_id, policy)
        except RoostError as exc:
            report.errors.append(f"retention of backup set {name} failed: {exc}")
    try:
        report.prune = prune(repo, log=lambda message: log.info("prune: %s", message))
    except PruneBlocked:
        report.errors.append("prune skipped: another prune is running on this repository")
    except RoostError as exc:
        report.errors.append(f"prune failed: {exc}")
    for error in report.errors:
        log.error("maintenance of organisation %s: %s", org_id, error)
    return report

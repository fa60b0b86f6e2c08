"""Maintenance commands: forget (retention policy) and prune (free unreferenced data)."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from roost.cli import output
from roost.cli.context import JsonOption, Session, session
from roost.engine.forget import ForgetDecision, group_key
from roost.engine.forget import forget as forget_snapshots
from roost.engine.repository import Repository
from roost.engine.retention import EMPTY_POLICY_MESSAGE, RetentionPolicy, parse_duration
from roost.errors import UsageError

if TYPE_CHECKING:
    from roost.engine.prune import PruneOptions, PruneReport

DryRunOption = Annotated[
    bool, typer.Option("--dry-run", "-n", help="Only show what would happen; change nothing.")
]
MaxUnusedOption = Annotated[
    float,
    typer.Option(
        "--max-unused",
        min=0.0,
        max=100.0,
        metavar="PERCENT",
        help="Repack a pack when more than this share of it is unused.",
    ),
]
GraceOption = Annotated[
    str | None,
    typer.Option(
        "--grace",
        metavar="DURATION",
        help="Delete tombstoned data only when tombstoned at least this long ago (e.g. 1h).",
    ),
]


def register(app: typer.Typer) -> None:
    app.command()(forget)
    app.command()(prune)


def forget(
    ctx: typer.Context,
    keep_last: Annotated[int, typer.Option(min=0, metavar="N", help="Keep the N newest.")] = 0,
    keep_hourly: Annotated[int, typer.Option(min=0, metavar="N", help="Keep N hourly.")] = 0,
    keep_daily: Annotated[int, typer.Option(min=0, metavar="N", help="Keep N daily.")] = 0,
    keep_weekly: Annotated[int, typer.Option(min=0, metavar="N", help="Keep N weekly.")] = 0,
    keep_monthly: Annotated[int, typer.Option(min=0, metavar="N", help="Keep N monthly.")] = 0,
    keep_yearly: Annotated[int, typer.Option(min=0, metavar="N", help="Keep N yearly.")] = 0,
    keep_within: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Keep all within DURATION of the newest (e.g. 7d)."),
    ] = None,
    dry_run: DryRunOption = False,
    prune_after: Annotated[
        bool, typer.Option("--prune", help="Run prune after forgetting.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Remove snapshots by a retention policy, per host and set of paths."""
    within = _duration(keep_within, "--keep-within") if keep_within else None
    policy = _policy(
        keep_last=keep_last,
        keep_hourly=keep_hourly,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_yearly=keep_yearly,
        keep_within=within,
    )
    cli = session(ctx, json_output)
    repo = cli.open()
    plan = forget_snapshots(repo, policy, dry_run=dry_run)
    result: dict[str, Any] = _forget_json(plan, dry_run)
    if not cli.json:
        _print_plan(plan, dry_run)
    if prune_after:
        report = _run_prune(cli, repo, _prune_options(dry_run))
        result["prune"] = asdict(report)
    if cli.json:
        output.print_json(result)


def _policy(**rules: Any) -> RetentionPolicy:
    try:
        policy = RetentionPolicy(**rules)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if policy.is_empty():
        raise UsageError(EMPTY_POLICY_MESSAGE)
    return policy


def _duration(text: str, option: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _forget_json(plan: list[ForgetDecision], dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "kept": sum(d.keep for d in plan),
        "removed": sum(not d.keep for d in plan),
        "snapshots": [
            {
                "id": d.snapshot.id,
                "short_id": d.snapshot.short_id,
                "time": d.snapshot.time.isoformat(),
                "hostname": d.snapshot.hostname,
                "paths": d.snapshot.paths,
                "keep": d.keep,
                "reasons": list(d.reasons),
            }
            for d in plan
        ],
    }


def _print_plan(plan: list[ForgetDecision], dry_run: bool) -> None:
    group = None
    removed = "would remove" if dry_run else "removed"
    for decision in plan:
        snap = decision.snapshot
        if group_key(snap) != group:
            group = group_key(snap)
            paths = ", ".join(output.show_path(p) for p in sorted(set(snap.paths)))
            output.say(f"{snap.hostname}: {paths}", "bold")
        action = "keep" if decision.keep else removed
        line = f"  {action:<12} {snap.short_id}  {output.format_time(snap.time)}"
        if decision.reasons:
            line += "  " + ", ".join(decision.reasons)
        output.say(line, None if decision.keep else "red")
    gone = sum(not d.keep for d in plan)
    output.say(f"{len(plan) - gone} snapshots kept, {gone} {'to remove' if dry_run else 'removed'}")


def prune(
    ctx: typer.Context,
    dry_run: DryRunOption = False,
    max_unused: MaxUnusedOption = 20.0,
    grace: GraceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete data that no snapshot references any more (safe while backups run)."""
    options = _prune_options(dry_run, max_unused, grace)
    cli = session(ctx, json_output)
    report = _run_prune(cli, cli.open(), options)
    if cli.json:
        output.print_json(asdict(report))


def _prune_options(
    dry_run: bool, max_unused: float | None = None, grace: str | None = None
) -> PruneOptions:
    """PruneOptions from the command line; what is not given keeps prune's default."""
    from roost.engine.prune import PruneOptions

    options = PruneOptions(dry_run=dry_run)
    if max_unused is not None:
        options = replace(options, max_unused_fraction=max_unused / 100)
    if grace:
        options = replace(options, grace_seconds=_duration(grace, "--grace").total_seconds())
    return options


def _run_prune(cli: Session, repo: Repository, options: PruneOptions) -> PruneReport:
    from roost.engine.prune import prune as prune_repository

    def log(message: str) -> None:
        if not cli.json:
            output.say(message, "dim", err=True)

    report = prune_repository(repo, options, log)
    if not cli.json:
        _print_prune(report, options.dry_run)
    return report


def _print_prune(report: PruneReport, dry_run: bool) -> None:
    prefix = "would free" if dry_run else "freed"
    output.say(
        f"prune: {report.tombstoned_blobs} blobs tombstoned, {report.deferred_blobs} deferred, "
        f"{report.deleted_packs} packs deleted, {report.repacked_packs} repacked; "
        f"{prefix} {output.format_size(report.bytes_freed)}"
    )

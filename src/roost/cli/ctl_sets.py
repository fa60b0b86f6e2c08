"""`roost ctl policies ...` and `roost ctl sets ...`: what is backed up, when, kept how long."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

import typer

from roost.cli import output
from roost.cli.context import JsonOption
from roost.cli.ctl_app import (
    get,
    open_api,
    post,
    print_fields,
    print_rows,
    seconds,
    show,
    text,
    when,
)
from roost.cli.ctl_client import api_path, present
from roost.engine.filters import parse_size
from roost.errors import UsageError

policies_app = typer.Typer(
    help="Backup policies: schedule, window, bandwidth, retries, retention.", no_args_is_help=True
)
sets_app = typer.Typer(
    help="Backup sets: which paths of which agent, under which policy.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="Name.")]


def register(app: typer.Typer) -> None:
    app.add_typer(policies_app, name="policies")
    app.add_typer(sets_app, name="sets")


# -- policies -------------------------------------------------------------------------------


@policies_app.command("create")
def policies_create(
    ctx: typer.Context,
    name: NameArg,
    schedule: Annotated[
        str, typer.Option("--schedule", help='Cron ("30 1 * * *") or "daily 02:00" forms.')
    ],
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="IANA time zone (default UTC).")
    ] = None,
    window: Annotated[
        str | None,
        typer.Option("--window", help='When jobs may run: "22:00-06:00" or "22:00+8h".'),
    ] = None,
    bandwidth: Annotated[
        str | None, typer.Option("--bandwidth", help="Upload limit per second, e.g. 10M.")
    ] = None,
    retries: Annotated[
        int | None, typer.Option("--retries", min=0, help="Retries after a failure.")
    ] = None,
    retry_interval: Annotated[
        str | None, typer.Option("--retry-interval", help="Wait before a retry, e.g. 10m.")
    ] = None,
    keep_last: Annotated[
        int | None, typer.Option("--keep-last", min=0, help="Keep the last N snapshots.")
    ] = None,
    keep_hourly: Annotated[
        int | None,
        typer.Option("--keep-hourly", min=0, help="Keep one snapshot per hour for N hours."),
    ] = None,
    keep_daily: Annotated[
        int | None, typer.Option("--keep-daily", min=0, help="Keep one per day for N days.")
    ] = None,
    keep_weekly: Annotated[
        int | None, typer.Option("--keep-weekly", min=0, help="Keep one per week for N weeks.")
    ] = None,
    keep_monthly: Annotated[
        int | None, typer.Option("--keep-monthly", min=0, help="Keep one per month for N months.")
    ] = None,
    keep_yearly: Annotated[
        int | None, typer.Option("--keep-yearly", min=0, help="Keep one per year for N years.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create a backup policy."""
    body = present(
        name=name,
        schedule=schedule,
        timezone=timezone,
        window=window,
        bandwidth_limit=parse_size(bandwidth) if bandwidth is not None else None,
        retries=retries,
        retry_interval=seconds(retry_interval, "--retry-interval"),
        keep_last=keep_last,
        keep_hourly=keep_hourly,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_yearly=keep_yearly,
    )
    show(ctx, json_output, post(ctx, "/policies", body), _print_policy)


@policies_app.command("list")
def policies_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List backup policies."""
    show(ctx, json_output, get(ctx, "/policies"), _print_policies)


@policies_app.command("show")
def policies_show(ctx: typer.Context, name: NameArg, json_output: JsonOption = False) -> None:
    """Show one backup policy with its next run."""
    show(ctx, json_output, get(ctx, api_path("policies", name)), _print_policy)


def _keep(policy: dict[str, Any]) -> str:
    units = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
    kept = [f"{unit} {policy[f'keep_{unit}']}" for unit in units if policy[f"keep_{unit}"]]
    return ", ".join(kept) or "everything"


def _bandwidth(limit: int | None) -> str:
    return f"{output.format_size(limit)}/s" if limit else "unlimited"


def _print_policies(policies: list[dict[str, Any]]) -> None:
    columns = ("NAME", "SCHEDULE", "TIMEZONE", "WINDOW", "KEEP", "NEXT RUN")
    rows = (
        (p["name"], p["schedule"], p["timezone"], text(p["window"]), _keep(p), when(p["next_run"]))
        for p in policies
    )
    print_rows(columns, rows, "no policies; create one with `roost ctl policies create`")


def _print_policy(policy: dict[str, Any]) -> None:
    retry = f"{policy['retries']}, {output.format_duration(policy['retry_interval'])} apart"
    print_fields(
        [
            ("policy", policy["name"]),
            ("schedule", f"{policy['schedule']} ({policy['timezone']})"),
            ("window", text(policy["window"])),
            ("bandwidth", _bandwidth(policy["bandwidth_limit"])),
            ("retries", retry),
            ("keep", _keep(policy)),
            ("next run", when(policy["next_run"])),
        ]
    )


# -- backup sets ----------------------------------------------------------------------------


@sets_app.command("create")
def sets_create(
    ctx: typer.Context,
    name: NameArg,
    agent: Annotated[str, typer.Option("--agent", help="The agent that backs it up.")],
    paths: Annotated[
        list[str], typer.Option("--path", help="Absolute path on the agent (repeatable).")
    ],
    policy: Annotated[str, typer.Option("--policy", help="The policy: when, kept how long.")],
    excludes: Annotated[
        list[str] | None, typer.Option("--exclude", help="Pattern to leave out (repeatable).")
    ] = None,
    snapshot_mode: Annotated[
        Literal["auto", "never"] | None,
        typer.Option("--snapshot-mode", help="Back up from a filesystem snapshot (default auto)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create a backup set."""
    body = present(
        name=name,
        agent=agent,
        paths=paths,
        excludes=excludes or None,
        policy=policy,
        snapshot_mode=snapshot_mode,
    )
    show(ctx, json_output, post(ctx, "/sets", body), _print_set)


@sets_app.command("list")
def sets_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List backup sets with their last job and next run."""
    show(ctx, json_output, get(ctx, "/sets"), _print_sets)


@sets_app.command("show")
def sets_show(ctx: typer.Context, name: NameArg, json_output: JsonOption = False) -> None:
    """Show one backup set."""
    show(ctx, json_output, get(ctx, api_path("sets", name)), _print_set)


def _last_job(backup_set: dict[str, Any]) -> str:
    last = backup_set["last_job"]
    return f"{last['state']} {when(last['created_at'])}" if last else "-"


def _print_sets(sets: list[dict[str, Any]]) -> None:
    columns = ("NAME", "AGENT", "POLICY", "ENABLED", "PATHS", "LAST JOB", "NEXT RUN")
    rows = (
        (
            s["name"],
            s["agent"],
            text(s["policy"]),
            text(s["enabled"]),
            text(s["paths"]),
            _last_job(s),
            when(s["next_run"]),
        )
        for s in sets
    )
    print_rows(columns, rows, "no backup sets; create one with `roost ctl sets create`")


def _print_set(backup_set: dict[str, Any]) -> None:
    last = backup_set["last_job"]
    print_fields(
        [
            ("backup set", backup_set["name"]),
            ("agent", backup_set["agent"]),
            ("paths", text(backup_set["paths"])),
            ("excludes", text(backup_set["excludes"])),
            ("policy", text(backup_set["policy"])),
            ("snapshot mode", backup_set["snapshot_mode"]),
            ("enabled", text(backup_set["enabled"])),
            ("last job", f"{last['id']} {_last_job(backup_set)}" if last else "-"),
            ("next run", when(backup_set["next_run"])),
        ]
    )


def _set_enabled(ctx: typer.Context, name: str, action: str, json_output: bool) -> None:
    backup_set = post(ctx, api_path("sets", name, action))
    show(ctx, json_output, backup_set, lambda s: output.say(f"backup set {s['name']} {action}d"))


@sets_app.command("disable")
def sets_disable(ctx: typer.Context, name: NameArg, json_output: JsonOption = False) -> None:
    """Disable a backup set: its schedule stops (no catch-up when enabled again)."""
    _set_enabled(ctx, name, "disable", json_output)


@sets_app.command("enable")
def sets_enable(ctx: typer.Context, name: NameArg, json_output: JsonOption = False) -> None:
    """Enable a disabled backup set."""
    _set_enabled(ctx, name, "enable", json_output)


@sets_app.command("delete")
def sets_delete(
    ctx: typer.Context,
    name: NameArg,
    confirm: Annotated[
        str | None, typer.Option("--confirm", help="The set's name again: deletion is final.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a backup set AND its snapshots."""
    confirmed = confirm if confirm is not None else _ask_confirmation(name)
    if confirmed != name:
        raise UsageError(
            f"deleting backup set {name} also deletes its snapshots; repeat with --confirm {name}"
        )
    with open_api(ctx) as api:
        api.delete(api_path("sets", name), confirm=confirmed)
    result = {"name": name, "deleted": True}
    show(ctx, json_output, result, lambda _: output.say(f"deleted backup set {name}"))


def _ask_confirmation(name: str) -> str | None:
    """On a terminal, the admin types the name; elsewhere nothing is confirmed."""
    if not sys.stdin.isatty():
        return None
    output.say(f"Deleting backup set {name} also deletes all its snapshots.", "yellow", err=True)
    answer: str = typer.prompt("Type the set's name to confirm", default="", show_default=False)
    return answer.strip()

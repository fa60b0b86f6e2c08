"""`roost ctl`: the admin command line over the server's HTTP API (docs/control-plane.md).

Thin by design: parse the arguments, call the API (roost.cli.ctl_client), format the answer.
``--json`` prints the API's JSON as it came; otherwise Rich tables. The commands live in
``ctl_cmds`` (login, tokens, agents, recovery key), ``ctl_sets`` (policies, backup sets) and
``ctl_jobs`` (backup now, jobs, snapshots, restores). Registered by the main app with
``ctl_app.register(app)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from roost.cli import output
from roost.cli.context import GlobalOptions
from roost.cli.ctl_client import Api, load_config, resolve_target
from roost.engine.retention import parse_duration
from roost.errors import UsageError

ctl_app = typer.Typer(
    name="ctl",
    help="Administer a Roost server: agents, policies, backup sets, jobs, restores.",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class CtlOptions:
    """What the options between `ctl` and the command say; the Click context's obj."""

    server: str | None
    fingerprint: str | None
    json: bool  # `roost --json ctl ...`


ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="ROOST_SERVER",
        help="Server URL, https://HOST:PORT (default: the one `roost ctl login` saved).",
        show_default=False,
    ),
]
FingerprintOption = Annotated[
    str | None,
    typer.Option(
        "--fingerprint",
        envvar="ROOST_FINGERPRINT",
        help="SHA-256 fingerprint of the server's certificate, as `roost server` printed it "
        "(default: the one `roost ctl login` saved).",
        show_default=False,
    ),
]


@ctl_app.callback()
def _options(
    ctx: typer.Context, server: ServerOption = None, fingerprint: FingerprintOption = None
) -> None:
    parent = ctx.find_object(GlobalOptions)
    ctx.obj = CtlOptions(server, fingerprint, parent.json if parent else False)


def options(ctx: typer.Context) -> CtlOptions:
    found = ctx.find_object(CtlOptions)
    return found if found is not None else CtlOptions(None, None, False)


def open_api(ctx: typer.Context, user: str | None = None) -> Api:
    opts = options(ctx)
    config = load_config()
    return Api(resolve_target(opts.server, opts.fingerprint, config), config, user)


def get(ctx: typer.Context, path: str, /, **params: Any) -> Any:
    """One GET; the connection is closed afterwards."""
    with open_api(ctx) as api:
        return api.get(path, **params)


def post(ctx: typer.Context, path: str, body: dict[str, Any] | None = None) -> Any:
    """One POST; the connection is closed afterwards."""
    with open_api(ctx) as api:
        return api.post(path, body)


def wants_json(ctx: typer.Context, flag: bool) -> bool:
    return flag or options(ctx).json


def show(ctx: typer.Context, flag: bool, value: Any, human: Callable[[Any], None]) -> None:
    """The API's JSON with ``--json``, else the human form."""
    if wants_json(ctx, flag):
        output.print_json(value)
    else:
        human(value)


def seconds(value: str | None, option: str) -> int | None:
    """``"24h"`` -> 86400 (the forms `roost forget --keep-within` reads)."""
    if value is None:
        return None
    try:
        return int(parse_duration(value).total_seconds())
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


# -- formatting helpers ---------------------------------------------------------------------


def when(value: str | None) -> str:
    """An API time (ISO 8601) in the local time zone; "-" for none."""
    return output.format_time(datetime.fromisoformat(value)) if value else "-"


def text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "-"
    return str(value)


def rows_table(columns: Iterable[str], rows: Iterable[Iterable[str]]) -> Table:
    grid = output.table(*columns)
    for row in rows:
        output.add_row(grid, *row)
    return grid


def print_rows(columns: Iterable[str], rows: Iterable[Iterable[str]], empty: str) -> None:
    grid = rows_table(columns, rows)
    if grid.row_count:
        output.print_table(grid)
    else:
        output.say(empty)


def print_fields(fields: Iterable[tuple[str, str]]) -> None:
    """``name: value`` lines, names aligned."""
    pairs = list(fields)
    width = max((len(name) for name, _ in pairs), default=0)
    for name, value in pairs:
        output.say(f"{name + ':':<{width + 1}} {value}")


def register(app: typer.Typer) -> None:
    from roost.cli import ctl_cmds, ctl_jobs, ctl_sets  # they import this module: not at the top

    for module in (ctl_cmds, ctl_sets, ctl_jobs):
        module.register(ctl_app)
    app.add_typer(ctl_app, name="ctl")

"""`roost ctl` commands for access: login, enrollment tokens, agents, the recovery key.

Registered on the ctl app by ``register`` (see roost.cli.ctl_app); policies and backup sets
are in ctl_sets, jobs and restores in ctl_jobs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from roost.cli import output
from roost.cli.context import JsonOption, SecretSource
from roost.cli.ctl_app import (
    FingerprintOption,
    ServerOption,
    get,
    open_api,
    options,
    post,
    print_rows,
    seconds,
    show,
    text,
    wants_json,
    when,
)
from roost.cli.ctl_client import (
    PASSWORD_ENV,
    USER_ENV,
    Api,
    api_path,
    load_config,
    present,
    resolve_target,
)

NO_PASSWORD = f"no password: set {PASSWORD_ENV} or run `roost ctl login` on a terminal"

tokens_app = typer.Typer(help="Enrollment tokens: agents enroll with them.", no_args_is_help=True)
agents_app = typer.Typer(help="Agents: list (without a subcommand), disable, enable.")


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(agents_app, name="agents")
    app.command("recovery-key")(recovery_key)


# -- login ----------------------------------------------------------------------------------


def login(
    ctx: typer.Context,
    user: Annotated[
        str | None,
        typer.Option(
            "--user", envvar=USER_ENV, help="User name (default: admin).", show_default=False
        ),
    ] = None,
    server: ServerOption = None,
    fingerprint: FingerprintOption = None,
    json_output: JsonOption = False,
) -> None:
    """Log in; saves the session token, the server and its fingerprint for later commands."""
    opts = options(ctx)
    config = load_config()
    target = resolve_target(server or opts.server, fingerprint or opts.fingerprint, config)
    with Api(target, config, user) as api:
        prompt = f"Password for {api.user} on {target.url}: "
        password = SecretSource(None, PASSWORD_ENV, prompt, NO_PASSWORD).read()
        api.login(password, make_current=True)
    entry = config.entry(target.url)
    result = {
        "server": target.url,
        "user": api.user,
        "fingerprint": target.fingerprint,
        "expires_at": entry.expires_at,
        "config": str(config.path),
    }
    show(ctx, json_output, result, _print_login)


def _print_login(result: dict[str, Any]) -> None:
    output.say(f"logged in to {result['server']} as {result['user']}")
    output.say(f"session valid until {when(result['expires_at'])}; saved in {result['config']}")


# -- tokens ---------------------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    expires: Annotated[
        str | None, typer.Option("--expires", help="Valid for, e.g. 24h (default) or 7d.")
    ] = None,
    uses: Annotated[
        int | None, typer.Option("--uses", help="How many agents may enroll (default 1).")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="What it is for.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Create an enrollment token (shown once)."""
    body = present(expires_in=seconds(expires, "--expires"), uses=uses, note=note)
    with open_api(ctx) as api:
        created = api.post("/tokens", body)
        target = api.target
    if wants_json(ctx, json_output):
        output.print_json(created)
        return
    output.say(f"enrollment token (shown only once): {created['token']}", "bold")
    output.say(
        f"id {created['id']}, {created['uses_left']} use(s), expires {when(created['expires_at'])}"
    )
    pin = f" --fingerprint {target.fingerprint}" if target.fingerprint else ""
    output.say("enroll an agent with:")
    output.say(f"  roost agent enroll --server {target.url}{pin} --token {created['token']}")


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List enrollment tokens."""
    show(ctx, json_output, get(ctx, "/tokens"), _print_tokens)


def _print_tokens(tokens: list[dict[str, Any]]) -> None:
    columns = ("ID", "CREATED", "EXPIRES", "USES LEFT", "REVOKED", "NOTE")
    rows = (
        (
            t["id"],
            when(t["created_at"]),
            when(t["expires_at"]),
            str(t["uses_left"]),
            text(t["revoked"]),
            t["note"],
        )
        for t in tokens
    )
    print_rows(columns, rows, "no enrollment tokens")


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id.")],
    json_output: JsonOption = False,
) -> None:
    """Revoke an enrollment token: no agent can enroll with it any more."""
    with open_api(ctx) as api:
        api.delete(api_path("tokens", token_id))
    result = {"id": token_id, "revoked": True}
    show(ctx, json_output, result, lambda _: output.say(f"revoked enrollment token {token_id}"))


# -- agents ---------------------------------------------------------------------------------


@agents_app.callback(invoke_without_command=True)
def agents(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List agents (without a subcommand), or disable / enable one."""
    if ctx.invoked_subcommand is None:
        show(ctx, json_output, get(ctx, "/agents"), _print_agents)


@agents_app.command("list")
def agents_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List agents with their state."""
    show(ctx, json_output, get(ctx, "/agents"), _print_agents)


def _print_agents(agents: list[dict[str, Any]]) -> None:
    columns = ("NAME", "STATE", "HOSTNAME", "OS", "VERSION", "LAST SEEN")
    rows = (
        (a["name"], a["state"], a["hostname"], a["os"], a["version"], when(a["last_seen"]))
        for a in agents
    )
    print_rows(columns, rows, "no agents enrolled; create a token with `roost ctl tokens create`")


def _set_agent(ctx: typer.Context, name: str, action: str, json_output: bool) -> None:
    agent = post(ctx, api_path("agents", name, action))
    show(
        ctx, json_output, agent, lambda a: output.say(f"agent {a['name']} {action}d ({a['state']})")
    )


@agents_app.command("disable")
def agents_disable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent name.")],
    json_output: JsonOption = False,
) -> None:
    """Disable an agent: its scheduled backups are skipped."""
    _set_agent(ctx, name, "disable", json_output)


@agents_app.command("enable")
def agents_enable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent name.")],
    json_output: JsonOption = False,
) -> None:
    """Enable a disabled agent."""
    _set_agent(ctx, name, "enable", json_output)


# -- recovery key ---------------------------------------------------------------------------


def recovery_key(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Print the organisation's recovery key (admins only)."""
    answer = get(ctx, "/organisation/recovery-key")
    if wants_json(ctx, json_output):
        output.print_json(answer)
        return
    output.say(f"RECOVERY KEY: {answer['recovery_key']}", "bold")
    output.say(
        "With the storage it opens every backup of the organisation: keep it offline, away "
        "from the server."
    )

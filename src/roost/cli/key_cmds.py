"""Key commands: add a passphrase, list the key files, remove one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from roost.cli import output
from roost.cli.context import NEW_PASSWORD_ENV, NO_NEW_PASSPHRASE, JsonOption, SecretSource, session
from roost.engine import keys

key_app = typer.Typer(
    help="Manage the passphrases (and recovery key) that open the repository.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    key_app.command(name="add")(add)
    key_app.command(name="list")(list_keys)
    key_app.command(name="remove")(remove)
    app.add_typer(key_app, name="key")


def add(
    ctx: typer.Context,
    new_password_file: Annotated[
        Path | None,
        typer.Option("--new-password-file", help="Read the new passphrase from this file."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Add a passphrase (from --new-password-file, ROOST_NEW_PASSWORD or a prompt)."""
    cli = session(ctx, json_output)
    repo = cli.open()
    source = SecretSource(
        new_password_file, NEW_PASSWORD_ENV, "New passphrase: ", NO_NEW_PASSPHRASE
    )
    key_id = repo.add_passphrase(source.read(confirm=True))
    if cli.json:
        output.print_json({"id": key_id})
    else:
        output.say(f"added passphrase key {key_id[:8]}")


def list_keys(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the key files; the one that the given passphrase opens is marked."""
    cli = session(ctx, json_output)
    repo = cli.open()
    rows = [_key_json(key_id, doc, cli.secret) for key_id, doc in repo.list_keys()]
    if cli.json:
        output.print_json(rows)
        return
    grid = output.table("", "ID", "Kind", "Created", "Host")
    for row in rows:
        created = output.format_time(datetime.fromisoformat(row["created"]))
        mark = "*" if row["in_use"] else ""
        output.add_row(grid, mark, row["id"][:8], row["kind"], created, row["hostname"])
    output.print_table(grid)
    output.say("* the key in use")


def _key_json(key_id: str, doc: dict[str, Any], secret: str) -> dict[str, Any]:
    return {
        "id": key_id,
        "kind": str(doc.get("kind", "")),
        "created": str(doc.get("created", "")),
        "hostname": str(doc.get("hostname", "")),
        "in_use": keys.open_keyfile(doc, secret) is not None,
    }


def remove(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="ID", help="Key id prefix (see `key list`).")],
    json_output: JsonOption = False,
) -> None:
    """Remove a key file (never the one in use, nor the last passphrase)."""
    cli = session(ctx, json_output)
    removed = cli.open().remove_key(key_id, cli.secret)
    if cli.json:
        output.print_json({"removed": removed})
    else:
        output.say(f"removed key {removed[:8]}")

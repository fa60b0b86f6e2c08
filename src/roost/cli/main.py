"""The ``roost`` command: global options, the command list and the one error policy.

Every expected failure is a ``RoostError``: it becomes one line ``roost: error: <message>`` on
stderr and the error's exit code, never a traceback. Anything else is a bug: one line with a
hint to rerun with ``ROOST_DEBUG=1``, which prints the traceback too.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from typer import _click as click  # Typer's vendored Click: the types of its groups
from typer.core import TyperGroup

from roost import __version__
from roost.cli import fastparams
from roost.cli.context import GlobalOptions, JsonOption
from roost.errors import RoostError
from roost.memory import freeze_imported, skip_exit_collection, tune_allocator

INTERRUPTED = 130

fastparams.install()  # no Pydantic for values that are already what they should be


class _LazyGroup(TyperGroup):
    """Builds only the command that runs, importing only its module.

    Building every command (Typer reads each signature and its annotations) and importing
    every command module took 30 ms of each run; the agent, server and ctl imports take a
    second. ``roost --help`` still builds them all, in the order of ``_COMMANDS``.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS and cmd_name not in self.commands:
            holder = _holder(_COMMANDS[cmd_name])
            single = typer.Typer()
            single.callback()(_no_options)  # makes it a group even with a single command
            single.registered_commands = [
                info
                for info in holder.registered_commands
                if (info.name or typer.main.get_command_name(_callback_name(info))) == cmd_name
            ]
            single.registered_groups = [g for g in holder.registered_groups if g.name == cmd_name]
            command = typer.main.get_group(single).get_command(ctx, cmd_name)
            if command is not None:
                self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in _COMMANDS:
            # Typer suggests "Did you mean ...?" from the commands built so far, which used to
            # be every command but the lazy agent, server and ctl: build those for the message.
            for name, module in _COMMANDS.items():
                if module not in _LAZY:
                    self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


def _no_options() -> None:
    pass


def _callback_name(info: typer.models.CommandInfo) -> str:
    return getattr(info.callback, "__name__", "")


def _add_agent(app: typer.Typer) -> None:
    from roost.cli.agent_cmds import agent_app

    app.add_typer(agent_app, name="agent")


def _add_server(app: typer.Typer) -> None:
    from roost.cli import server_cmd

    server_cmd.register(app)


def _add_ctl(app: typer.Typer) -> None:
    from roost.cli import ctl_app

    ctl_app.register(app)


_LAZY: dict[str, Callable[[typer.Typer], None]] = {
    "agent": _add_agent,
    "server": _add_server,
    "ctl": _add_ctl,
}

# Every command, in the order `roost --help` has always listed them (the commands of the
# modules in the order they were registered, then their groups, then agent, server and
# ctl), with the module that registers it (tests/unit/cli/test_lazy_commands.py checks).
_COMMANDS: dict[str, str] = {
    "init": "repo_cmds",
    "snapshots": "repo_cmds",
    "ls": "repo_cmds",
    "diff": "repo_cmds",
    "stats": "repo_cmds",
    "check": "repo_cmds",
    "backup": "backup_cmds",
    "restore": "restore_cmds",
    "forget": "forget_cmds",
    "prune": "forget_cmds",
    "benchmark": "benchmark",
    "repair": "repo_cmds",
    "key": "key_cmds",
    "agent": "agent",
    "server": "server",
    "ctl": "ctl",
}
_holders: dict[str, typer.Typer] = {}
_holders_lock = threading.Lock()


def _holder(module: str) -> typer.Typer:
    """A Typer holding the commands of one module, registered once per process."""
    with _holders_lock:
        if module not in _holders:
            holder = typer.Typer()
            if module in _LAZY:
                _LAZY[module](holder)
            else:
                importlib.import_module(f"roost.cli.{module}").register(holder)
            _holders[module] = holder
        return _holders[module]


app = typer.Typer(
    cls=_LazyGroup,
    name="roost",
    help="Deduplicating, encrypted backups of directories into a repository.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"roost {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    repo: Annotated[
        str | None,
        typer.Option(
            "-r",
            "--repo",
            envvar="ROOST_REPO",
            help="Repository: a directory, file://PATH, s3://BUCKET/PREFIX or memory://NAME.",
        ),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="Read the passphrase (or recovery key) from this file; else ROOST_PASSWORD, "
            "else a prompt.",
        ),
    ] = None,
    json_output: JsonOption = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    ctx.obj = GlobalOptions(repo=repo, password_file=password_file, json=json_output)


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command line; return its exit code instead of exiting."""
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        command = typer.main.get_command(app)
        code = command.main(args=args, prog_name="roost", standalone_mode=False)
    except RoostError as exc:
        return _fail(str(exc), exc.exit_code)
    except typer.Abort:
        return _interrupted()
    except typer.TyperException as exc:  # Typer's own usage errors
        if not exc.format_message():  # no command given: the help was printed
            return exc.exit_code
        return _fail(_usage_message(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as exc:  # the one place that turns bugs into one line
        message = f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"
        if not _debug():
            message += " (rerun with ROOST_DEBUG=1 to see the traceback)"
        return _fail(message, 1)
    if code == INTERRUPTED:  # Typer turns KeyboardInterrupt into Exit(130)
        return _interrupted()
    return code if isinstance(code, int) else 0


def _fail(message: str, code: int, prefix: str = "roost: error: ") -> int:
    if _debug() and sys.exc_info()[0] is not None:
        import traceback  # only when asked: it is slow to import

        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.write(f"{prefix}{message}\n")
    sys.stderr.flush()
    return code


def _interrupted() -> int:
    # On a terminal, Ctrl-C may come mid-line (at a prompt): end that line first.
    prefix = "\nroost: " if sys.stderr.isatty() else "roost: "
    return _fail("interrupted", INTERRUPTED, prefix=prefix)


def _usage_message(exc: typer.TyperException) -> str:
    message = exc.format_message()
    command_path = getattr(getattr(exc, "ctx", None), "command_path", None)
    if command_path:
        message += f" (see `{command_path} --help`)"
    return message


def _debug() -> bool:
    return os.environ.get("ROOST_DEBUG", "") not in ("", "0")


def main() -> NoReturn:
    tune_allocator()
    freeze_imported()
    code = run()
    skip_exit_collection()
    sys.exit(code)


if __name__ == "__main__":
    main()

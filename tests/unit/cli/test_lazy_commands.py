"""Commands are built on use: the table in main.py must list what the modules register."""

from __future__ import annotations

import subprocess
import sys

import typer

from roost.cli import (
    backup_cmds,
    benchmark,
    forget_cmds,
    key_cmds,
    main,
    repo_cmds,
    restore_cmds,
)


def test_command_table_matches_the_modules_registrations() -> None:
    eager = typer.Typer()
    owners: dict[str, str] = {}
    for module in (repo_cmds, key_cmds, backup_cmds, restore_cmds, forget_cmds, benchmark):
        before_commands = len(eager.registered_commands)
        before_groups = len(eager.registered_groups)
        module.register(eager)
        short = module.__name__.rsplit(".", 1)[1]
        for info in eager.registered_commands[before_commands:]:
            owners[info.name or typer.main.get_command_name(info.callback.__name__)] = short
        for group in eager.registered_groups[before_groups:]:
            assert group.name is not None
            owners[group.name] = short
    commands = [
        info.name or typer.main.get_command_name(info.callback.__name__)
        for info in eager.registered_commands
    ]
    groups = [group.name for group in eager.registered_groups]
    expected = [*commands, *groups, *main._LAZY]  # Typer lists commands, then groups
    assert list(main._COMMANDS) == expected
    assert {name: main._COMMANDS[name] for name in owners} == owners


def test_every_listed_command_builds() -> None:
    group = typer.main.get_command(main.app)
    ctx = typer.Context(group)
    for name in main._COMMANDS:
        assert group.get_command(ctx, name) is not None, name


def test_a_command_imports_only_its_module() -> None:
    script = (
        "import sys\n"
        "from roost.cli.main import run\n"
        "run(['backup', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('roost.cli.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded = done.stdout.splitlines()[-1]
    assert "roost.cli.backup_cmds" in loaded
    for other in ("repo_cmds", "forget_cmds", "key_cmds", "benchmark", "agent_cmds", "ctl_app"):
        assert f"roost.cli.{other}'" not in loaded
    assert "roost.cli.restore_cmds'" not in loaded


def test_a_backup_does_not_import_the_restorer() -> None:
    script = (
        "import sys\n"
        "from roost.cli.main import run\n"
        "run(['backup', '--help'])\n"
        "print('roost.engine.restorer' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == "False"

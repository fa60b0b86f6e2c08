"""``make run``: protect a directory in a local repository with nothing to configure.

Environment: ROOST_HOME (default ./roost-data) holds the repository (``repository/``) and,
unless ROOST_PASSWORD is set, a generated passphrase (``passphrase``, mode 0600);
ROOST_PROTECT (default: your home directory) is what gets backed up. The first run creates
the repository and prints its recovery key once; every run makes a backup (incremental after
the first) and lists the snapshots. Everything goes through the ``roost`` commands themselves.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
from pathlib import Path

from roost.cli import output
from roost.cli.backup_cmds import EXIT_MISSED_FILES
from roost.cli.context import PASSWORD_ENV
from roost.cli.main import run

_GITIGNORE_SPECIAL = set("\\*?[]!# ")


def main() -> int:
    home = Path(os.environ.get("ROOST_HOME") or "./roost-data").expanduser().absolute()
    protect = Path(os.environ.get("ROOST_PROTECT") or Path.home()).expanduser().absolute()
    repository = home / "repository"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    global_args = ["--repo", str(repository), *_passphrase_args(home)]
    if not (repository / "config").is_file():  # a local repository exists once it has a config
        code = run([*global_args, "init"])
        if code:
            return code
    code = run([*global_args, "backup", str(protect), *_exclude_args(home, protect)])
    if code not in (0, EXIT_MISSED_FILES):
        return code
    output.say()
    code = run([*global_args, "snapshots"])
    _print_next_steps(repository, home, protect)
    return code


def _passphrase_args(home: Path) -> list[str]:
    """Nothing when ROOST_PASSWORD is set, else --password-file with a generated passphrase."""
    if os.environ.get(PASSWORD_ENV):
        return []
    path = home / "passphrase"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
        output.say(f"generated a passphrase for the repository, saved in {path} (mode 0600)")
    return ["--password-file", str(path)]


def _exclude_args(home: Path, protect: Path) -> list[str]:
    """Keep the repository out of its own backup when ROOST_HOME lies inside ROOST_PROTECT."""
    try:
        inside = home.resolve().relative_to(protect.resolve())
    except ValueError:
        return []
    if not inside.parts:
        return []
    escaped = "".join("\\" + ch if ch in _GITIGNORE_SPECIAL else ch for ch in inside.as_posix())
    return ["--exclude", f"/{escaped}/"]


def _print_next_steps(repository: Path, home: Path, protect: Path) -> None:
    roost = shutil.which("roost", path=os.path.dirname(sys.executable)) or "roost"
    if os.environ.get(PASSWORD_ENV):
        password = "# ROOST_PASSWORD is already set in this shell"
    else:
        password = f'export ROOST_PASSWORD="$(cat {shlex.quote(str(home / "passphrase"))})"'
    target = shlex.quote(str(home / "restore"))
    lines = [
        "",
        "Next, try:",
        f"  export ROOST_REPO={shlex.quote(str(repository))}",
        f"  {password}",
        f"  {roost} snapshots",
        f"  {roost} ls latest {shlex.quote(str(protect))}",
        f"  {roost} restore latest --target {target}",
        f"  {roost} stats",
        "  make run    # again: an incremental backup that reads only what changed",
    ]
    for line in lines:
        output.say(line)


if __name__ == "__main__":
    sys.exit(main())

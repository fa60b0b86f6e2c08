"""From global options to an opened repository: location, passphrase sources and prompts.

The passphrase comes from ``--password-file``, else ``ROOST_PASSWORD``, else a hidden prompt
when stdin is a terminal. A recovery key is accepted wherever a passphrase is (the repository
tries it on the recovery key file). Every check here happens before anything is written.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from roost.engine.repository import Repository
from roost.errors import UsageError
from roost.storage.base import Backend
from roost.storage.url import open_backend

PASSWORD_ENV = "ROOST_PASSWORD"
NEW_PASSWORD_ENV = "ROOST_NEW_PASSWORD"
NO_PASSPHRASE = "no passphrase: set ROOST_PASSWORD, use --password-file, or run interactively"
NO_NEW_PASSPHRASE = (
    "no new passphrase: set ROOST_NEW_PASSWORD, use --new-password-file, or run interactively"
)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON to stdout (no progress).")
]


@dataclass
class GlobalOptions:
    """What the options before the command name say; stored as the Click context's obj."""

    repo: str | None = None
    password_file: Path | None = None
    json: bool = False


@dataclass(frozen=True)
class SecretSource:
    """Where one secret may come from, in order: a file, an environment variable, a prompt."""

    file: Path | None
    env: str
    prompt: str
    missing: str

    def read(self, *, confirm: bool = False) -> str:
        if self.file is not None:
            return read_password_file(self.file)
        value = os.environ.get(self.env)
        if value:
            return value
        return prompt_secret(self.prompt, self.missing, confirm=confirm)


def read_password_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read password file {path}: {reason}") from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise UsageError(f"password file {path} is empty")
    return secret


def prompt_secret(prompt: str, missing: str, *, confirm: bool) -> str:
    """A hidden prompt on the terminal; asked twice when ``confirm`` (a new passphrase)."""
    if not sys.stdin.isatty():
        raise UsageError(missing)
    try:
        secret = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat it: ") != secret:
            raise UsageError("the two passphrases differ; nothing was changed")
    except EOFError:
        raise UsageError(missing) from None
    if not secret:
        raise UsageError("the passphrase must not be empty")
    return secret


class Session:
    """One command's view of the global options."""

    def __init__(self, options: GlobalOptions, json_output: bool) -> None:
        self.options = options
        self.json = options.json or json_output
        self._secret: str | None = None

    @property
    def location(self) -> str:
        if not self.options.repo:
            raise UsageError("no repository given: use -r/--repo or set ROOST_REPO")
        return self.options.repo

    def backend(self) -> Backend:
        return open_backend(self.location)

    def passphrase_source(self) -> SecretSource:
        return SecretSource(
            self.options.password_file, PASSWORD_ENV, "Repository passphrase: ", NO_PASSPHRASE
        )

    @property
    def secret(self) -> str:
        """The passphrase or recovery key that opens the repository (asked at most once)."""
        if self._secret is None:
            self._secret = self.passphrase_source().read()
        return self._secret

    def new_passphrase(self) -> str:
        """The passphrase for a new repository: prompted twice when asked for."""
        source = replace(self.passphrase_source(), prompt="New repository passphrase: ")
        return source.read(confirm=True)

    def open(self) -> Repository:
        backend = self.backend()
        return Repository.open(backend, self.secret)


def session(ctx: typer.Context, json_output: bool = False) -> Session:
    options = ctx.find_object(GlobalOptions) or GlobalOptions()
    return Session(options, json_output)

"""`roost agent enroll` and `roost agent run`: the agent's command line (thin: see roost.agent).

Registered by the main app as ``app.add_typer(agent_app, name="agent")``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from roost.agent.config import load_config, resolve_home, single_instance
from roost.agent.enroll import default_name, enroll
from roost.agent.platform import current_platform
from roost.agent.runner import AgentRunner
from roost.cli.output import say
from roost.errors import RoostError

agent_app = typer.Typer(
    name="agent",
    help="Run this machine's backup agent: enroll it with a Roost server once, then run it.",
    no_args_is_help=True,
)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="ROOST_AGENT_HOME",
        help="Agent home directory holding agent.json (default: ./roost-agent).",
        show_default=False,
    ),
]


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Every failure the user can act on becomes `roost: error: ...` and its exit code, as in
    the main app (roost.cli.main), also when this sub-app runs on its own."""
    try:
        yield
    except RoostError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"roost: error: {exc}\n")
        raise typer.Exit(exc.exit_code) from None


@agent_app.command("enroll")
def enroll_command(
    server: Annotated[
        str, typer.Option("--server", help="The server's URL, e.g. https://backup.example:8443.")
    ],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="ROOST_ENROLL_TOKEN",
            help="One-time enrollment token an admin created on the server.",
        ),
    ],
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="SHA-256 fingerprint of the server's certificate (64 hex digits, colons "
            "optional), as the server printed it. Without it the certificate seen now is "
            "trusted and pinned.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Agent name (default: this host's name).")
    ] = None,
    home: HomeOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing enrollment in --home.")
    ] = False,
) -> None:
    """Enroll this machine with a Roost server; stores credentials in the agent home."""
    with _one_line_errors():
        platform = current_platform()
        agent_home = resolve_home(home)
        done = enroll(
            server,
            token,
            name or default_name(platform.hostname),
            fingerprint,
            agent_home,
            force=force,
            platform=platform,
        )
    config = done.config
    say(f"enrolled as {config.name} (agent id {config.agent_id}) with {config.server_url}")
    if done.trusted_on_first_use:
        say(
            f"warning: no --fingerprint given; pinned the certificate seen now: "
            f"{config.fingerprint} - compare it with the one the server printed",
            "yellow",
            err=True,
        )
    elif config.fingerprint:
        say(f"server certificate matches the pinned fingerprint {config.fingerprint}")
    home_arg = f" --home {agent_home}" if home is not None else ""
    say(f"credentials saved in {done.path}; start the agent with `roost agent run{home_arg}`")


@agent_app.command("run")
def run_command(
    home: HomeOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """Run the agent: connect to the server, receive jobs and run them (Ctrl-C stops)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    with _one_line_errors():
        agent_home = resolve_home(home)
        runner = AgentRunner(load_config(agent_home), agent_home)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            with single_instance(agent_home):
                runner.run()
        finally:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (a service stop) ends the agent like Ctrl-C: jobs abort, then it exits 0."""
    raise KeyboardInterrupt

"""The backup command, with its progress bar and summary (restore: restore_cmds.py).

The engine modules the backup needs are imported when it runs, and nothing of restore's: the
start-up time of ``roost`` is part of every backup.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from roost.cli import output
from roost.cli.context import JsonOption, Session, session
from roost.cli.progress import BackupBar, progress_bar
from roost.engine.progress import BackupProgress
from roost.errors import RoostError

if TYPE_CHECKING:
    from roost.engine.archiver import BackupSummary
    from roost.engine.filters import ExcludeRules
    from roost.engine.repository import Repository
    from roost.engine.scanner import Scanner
    from roost.engine.snapshot import Snapshot

EXIT_MISSED_FILES = 3
TESTING_KNOBS = (
    "Testing knob (environment, hidden option): ROOST_CHECKPOINT_SECONDS=SECONDS sets how "
    "often the backup writes an index checkpoint (default 30)."
)


class CompletedWithErrors(RoostError):
    """The backup completed, but some files could not be read."""

    exit_code = EXIT_MISSED_FILES


def register(app: typer.Typer) -> None:
    app.command(epilog=TESTING_KNOBS)(backup)


def backup(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(metavar="PATH...", help="What to back up.")],
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", "-e", metavar="PATTERN", help="Skip matches (gitignore)."),
    ] = None,
    exclude_file: Annotated[
        list[Path] | None,
        typer.Option(metavar="FILE", help="Read exclude patterns from FILE, one per line."),
    ] = None,
    exclude_larger_than: Annotated[
        str | None, typer.Option(metavar="SIZE", help="Skip files larger than SIZE (e.g. 2G).")
    ] = None,
    one_file_system: Annotated[
        bool, typer.Option("--one-file-system", "-x", help="Do not cross file systems.")
    ] = False,
    tag: Annotated[list[str] | None, typer.Option(metavar="TAG", help="Tag the snapshot.")] = (
        None
    ),
    host: Annotated[str | None, typer.Option(metavar="NAME", help="Hostname to record.")] = None,
    parent: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            help="Reuse unchanged files of this snapshot (default: "
            "the latest one of this host with the same paths).",
        ),
    ] = None,
    json_output: JsonOption = False,
    checkpoint_seconds: Annotated[
        float, typer.Option(envvar="ROOST_CHECKPOINT_SECONDS", min=0.0, hidden=True)
    ] = 30.0,
) -> None:
    """Back up files and directories into a new snapshot."""
    from roost.engine import workerproc
    from roost.engine.archiver import normalise_sources
    from roost.engine.filters import ExcludeRules

    rules = ExcludeRules.build(
        exclude or [], exclude_file or [], exclude_larger_than, one_file_system
    )
    sources = normalise_sources(paths)
    cli = session(ctx, json_output)
    try:
        _run_backup(cli, sources, rules, host, parent, tag, checkpoint_seconds)
    finally:
        workerproc.discard_warm()


def _run_backup(
    cli: Session,
    sources: list[bytes],
    rules: ExcludeRules,
    host: str | None,
    parent: str | None,
    tag: list[str] | None,
    checkpoint_seconds: float,
) -> None:
    from roost.engine import scanworker
    from roost.engine.archiver import Archiver, BackupOptions

    repo = cli.open()
    # Started after the key derivation, not during it: Argon2id holds 64 MiB for ~0.15 s,
    # and the workers beside it made the backup's peak memory. They start while the parent
    # snapshot and the index are read.
    scanworker.prestart_workers()
    hostname = host or socket.gethostname()
    options = BackupOptions(
        rules=rules,
        parent=_parent(repo, parent, hostname, sources),
        tags=tag or [],
        hostname=hostname,
    )
    started = time.monotonic()
    with progress_bar(not cli.json) as bar:
        progress = BackupBar(bar) if bar else BackupProgress()
        with _scanner(sources, rules, progress) if bar else nullcontext():
            archiver = Archiver(repo, options, progress, checkpoint_seconds=checkpoint_seconds)
            snap, summary = archiver.run(sources)
    report = backup_json(snap, summary, time.monotonic() - started)
    if cli.json:
        output.print_json(report)
    else:
        _print_backup(snap, summary, report["duration_seconds"])
    if summary.files_missed:
        raise CompletedWithErrors(
            f"completed with errors: {summary.files_missed} files could not be read"
        )


def _scanner(sources: list[bytes], rules: ExcludeRules, progress: BackupProgress) -> Scanner:
    """Counts the files to back up for the progress bar (only shown on a terminal)."""
    from roost.engine.scanner import Scanner

    return Scanner(sources, rules, progress)


def _parent(
    repo: Repository, ref: str | None, hostname: str, sources: list[bytes]
) -> Snapshot | None:
    from roost.engine.parents import find_parent

    if ref:
        return repo.find_snapshot(ref)
    return find_parent(repo, hostname, [os.fsdecode(path) for path in sources])


def backup_json(snap: Snapshot, summary: BackupSummary, duration: float) -> dict[str, Any]:
    return {
        "snapshot_id": snap.id,
        "short_id": snap.short_id,
        "time": snap.time.isoformat(),
        "parent": snap.parent,
        "hostname": snap.hostname,
        "paths": snap.paths,
        "tags": snap.tags,
        **asdict(summary),
        "missed": snap.missed,
        "duration_seconds": round(duration, 3),
    }


def _print_backup(snap: Snapshot, summary: BackupSummary, duration: float) -> None:
    for miss in snap.missed:
        output.warn(f"could not read {output.show_path(miss['path'])}: {miss['reason']}")
    parent = f" (parent {snap.parent[:8]})" if snap.parent else ""
    output.say(f"snapshot {snap.short_id} saved{parent}", "bold green")
    output.say(
        f"files: {summary.files_new} new, {summary.files_changed} changed, "
        f"{summary.files_unchanged} unchanged, {summary.files_missed} missed"
    )
    output.say(
        f"read {output.format_size(summary.bytes_read)} of "
        f"{output.format_size(summary.bytes_total)}, stored "
        f"{output.format_size(summary.bytes_stored)} in {output.format_duration(duration)}"
    )

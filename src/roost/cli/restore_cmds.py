"""The restore command, with its progress bar and summary."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from roost.cli import output
from roost.cli.context import JsonOption, session
from roost.cli.progress import RestoreBar, progress_bar
from roost.engine.progress import RestoreProgress
from roost.engine.restore_conflict import CONFLICT_POLICIES

if TYPE_CHECKING:
    from roost.engine.restorer import RestoreSummary
    from roost.engine.snapshot import Snapshot


def register(app: typer.Typer) -> None:
    app.command()(restore)


def restore(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Argument(help="Snapshot id prefix, or 'latest'.")],
    target: Annotated[
        Path, typer.Option("--target", "-t", metavar="DIR", help="Directory to restore into.")
    ],
    include: Annotated[
        list[str] | None,
        typer.Option(metavar="PATH", help="Restore only this path of the snapshot (repeatable)."),
    ] = None,
    conflict: Annotated[
        str,
        typer.Option(
            metavar="|".join(CONFLICT_POLICIES),
            help="What to do with a file that already exists in the target.",
        ),
    ] = "overwrite",
    json_output: JsonOption = False,
) -> None:
    """Restore a snapshot (or some of its paths) into a directory."""
    from roost.engine.restorer import Restorer

    cli = session(ctx, json_output)
    repo = cli.open()
    snap = repo.find_snapshot(snapshot)
    includes = include or []
    started = time.monotonic()
    with progress_bar(not cli.json) as bar:
        progress = RestoreBar(bar) if bar else RestoreProgress()
        restorer = Restorer(
            repo, snap, os.fsencode(target), includes=includes, conflict=conflict, progress=progress
        )
        if bar:
            from roost.engine.stats import selection_totals

            progress.restore_started(*selection_totals(repo, snap, includes))
        summary = restorer.run()
    duration = time.monotonic() - started
    if cli.json:
        output.print_json(restore_json(snap, target, summary, duration))
    else:
        _print_restore(snap, target, summary, duration)


def restore_json(
    snap: Snapshot, target: Path, summary: RestoreSummary, duration: float
) -> dict[str, Any]:
    return {
        "snapshot_id": snap.id,
        "target": str(target.absolute()),
        **asdict(summary),
        "duration_seconds": round(duration, 3),
    }


def _print_restore(snap: Snapshot, target: Path, summary: RestoreSummary, duration: float) -> None:
    for warning in summary.warnings:
        output.warn(output.show_path(warning))
    output.say(
        f"restored snapshot {snap.short_id} to {output.show_path(str(target.absolute()))}: "
        f"{summary.files} files, {summary.dirs} directories, {summary.other} other, "
        f"{output.format_size(summary.bytes_written)} in {output.format_duration(duration)}",
        "bold green",
    )
    if summary.skipped or summary.renamed:
        output.say(
            f"{summary.skipped} existing entries skipped, {summary.renamed} restored under a "
            "new name"
        )

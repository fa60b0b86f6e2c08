"""Repository commands: init, snapshots, ls, diff, stats, check, repair index."""

from __future__ import annotations

import stat
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from roost.cli import output
from roost.cli.context import JsonOption, session
from roost.engine import diff as diffs
from roost.engine.recovery import rebuild_index
from roost.engine.repository import RepoConfig, Repository
from roost.engine.snapshot import Snapshot
from roost.engine.stats import RepoStats, compute_stats
from roost.engine.tree import Node
from roost.errors import RoostError

if TYPE_CHECKING:
    from roost.engine.check import CheckReport

TESTING_KNOBS = (
    "Testing knob (environment, hidden option): ROOST_PACK_SIZE=BYTES sets the pack size of "
    "the new repository."
)
_TYPE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
    "socket": stat.S_IFSOCK,
}

SnapshotArg = Annotated[str, typer.Argument(help="Snapshot id prefix, or 'latest'.")]
repair_app = typer.Typer(help="Repair a damaged repository.", no_args_is_help=True)


class CheckFailed(RoostError):
    """The check found errors."""


def register(app: typer.Typer) -> None:
    app.command(epilog=TESTING_KNOBS)(init)
    app.command()(snapshots)
    app.command(name="ls")(ls)
    app.command()(diff)
    app.command()(stats)
    app.command()(check)
    repair_app.command(name="index")(repair_index)
    app.add_typer(repair_app, name="repair")


def init(
    ctx: typer.Context,
    json_output: JsonOption = False,
    pack_size: Annotated[
        int | None,
        typer.Option("--pack-size", envvar="ROOST_PACK_SIZE", min=1, hidden=True),
    ] = None,
) -> None:
    """Create a repository and print its recovery key."""
    cli = session(ctx, json_output)
    backend = cli.backend()
    pack_size = pack_size or RepoConfig.pack_size
    repo, recovery_key = Repository.init(backend, cli.new_passphrase(), pack_size=pack_size)
    where = backend.describe()
    if cli.json:
        output.print_json({"repository": where, "id": repo.config.id, "recovery_key": recovery_key})
        return
    output.say(f"created Roost repository {repo.config.id[:8]} at {where}")
    output.say()
    output.say(f"RECOVERY KEY: {recovery_key}", "bold")
    output.say(
        "Store it safely, away from the repository (a password manager, or printed). It opens "
        "the repository if every passphrase is lost, and it is not shown again.",
        "yellow",
    )


def snapshots(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the snapshots, oldest first."""
    cli = session(ctx, json_output)
    snaps = cli.open().list_snapshots()
    if cli.json:
        output.print_json([snapshot_json(snap) for snap in snaps])
        return
    grid = output.table(
        "ID", "Time", "Host", "Paths", "Tags", "Files", "Size", numeric=("Files", "Size")
    )
    for snap in snaps:
        output.add_row(
            grid,
            snap.short_id,
            output.format_time(snap.time),
            snap.hostname,
            "\n".join(output.show_path(p) for p in snap.paths),
            ", ".join(snap.tags),
            str(snapshot_files(snap)),
            output.format_size(int(snap.summary.get("bytes_total", 0))),
        )
    output.print_table(grid)
    output.say(f"{len(snaps)} snapshots")


def snapshot_files(snap: Snapshot) -> int:
    keys = ("files_new", "files_changed", "files_unchanged")
    return sum(int(snap.summary.get(key, 0)) for key in keys)


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "id": snap.id,
        "short_id": snap.short_id,
        "time": snap.time.isoformat(),
        "hostname": snap.hostname,
        "username": snap.username,
        "paths": snap.paths,
        "tags": snap.tags,
        "parent": snap.parent,
        "excludes": snap.excludes,
        "summary": snap.summary,
        "missed": snap.missed,
    }


def ls(
    ctx: typer.Context,
    snapshot: SnapshotArg,
    path: Annotated[str, typer.Argument(help="Absolute path inside the snapshot.")] = "/",
    long: Annotated[bool, typer.Option("--long", "-l", help="Show mode, owner, size, time.")] = (
        False
    ),
    json_output: JsonOption = False,
) -> None:
    """List the entries of a snapshot below PATH, recursively."""
    cli = session(ctx, json_output)
    repo = cli.open()
    entries = diffs.list_entries(repo, repo.find_snapshot(snapshot), path)
    if cli.json:
        output.print_json_list(node_json(entry_path, node) for entry_path, node in entries)
        return
    for entry_path, node in entries:
        output.say(long_line(entry_path, node) if long else output.show_path(entry_path))


def node_json(path: bytes, node: Node) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "path": output.json_path(path),
        "type": node.type,
        "size": node.size,
        "mode": node.mode,
        "mtime": _iso_ns(node.mtime_ns),
        "uid": node.uid,
        "gid": node.gid,
    }
    if node.target is not None:
        doc["target"] = output.json_path(node.target)
    return doc


def _iso_ns(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).astimezone().isoformat(timespec="seconds")
    return f"{text[:19]}.{rest:09d}{text[19:]}"  # nanoseconds, which datetime cannot hold


def long_line(path: bytes, node: Node) -> str:
    mode = stat.filemode(_TYPE_BITS.get(node.type, 0) | node.mode)
    owner = node.user or str(node.uid)
    group = node.group or str(node.gid)
    when = _iso_ns(node.mtime_ns)[:19].replace("T", " ")
    line = f"{mode} {owner:>8} {group:>8} {node.size:>12} {when} {output.show_path(path)}"
    if node.target is not None:
        line += f" -> {output.show_path(node.target)}"
    return line


def diff(
    ctx: typer.Context,
    snapshot1: SnapshotArg,
    snapshot2: SnapshotArg,
    json_output: JsonOption = False,
) -> None:
    """Show what changed between two snapshots: + added, - removed, M modified."""
    cli = session(ctx, json_output)
    repo = cli.open()
    old, new = repo.find_snapshot(snapshot1), repo.find_snapshot(snapshot2)
    counts = {diffs.ADDED: 0, diffs.REMOVED: 0, diffs.MODIFIED: 0}
    changes = []
    for change in diffs.diff_trees(repo, old.tree, new.tree):
        counts[change.kind] += 1
        if cli.json:
            changes.append(_change_json(change))
        else:
            detail = f"  ({', '.join(change.what)})" if change.what else ""
            output.say(f"{change.kind} {output.show_path(change.path)}{detail}")
    added, removed, modified = counts[diffs.ADDED], counts[diffs.REMOVED], counts[diffs.MODIFIED]
    if cli.json:
        output.print_json(
            {"added": added, "removed": removed, "modified": modified, "changes": changes}
        )
        return
    output.say(f"{added} added, {removed} removed, {modified} modified")


def _change_json(change: diffs.Change) -> dict[str, Any]:
    return {
        "change": change.kind,
        "path": output.json_path(change.path),
        "type": change.type,
        "what": list(change.what),
    }


def stats(
    ctx: typer.Context,
    snapshot: Annotated[str | None, typer.Argument(help="Only this snapshot.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Show sizes, deduplication and compression of the repository (or one snapshot)."""
    cli = session(ctx, json_output)
    repo = cli.open()
    report = compute_stats(repo, repo.find_snapshot(snapshot) if snapshot else None)
    if cli.json:
        output.print_json(stats_json(report))
        return
    rows = [
        ("Snapshots", str(report.snapshots)),
        ("Files", str(report.files)),
        ("Logical size", output.format_size(report.logical_size)),
        ("Unique data", output.format_size(report.unique_size)),
        ("Stored size", output.format_size(report.stored_size)),
        ("Dedup ratio", f"{report.dedup_ratio:.2f}x"),
        ("Compression ratio", f"{report.compression_ratio:.2f}x"),
        ("Blobs", str(report.blobs)),
        ("Packs", str(report.packs)),
    ]
    if report.missing_blobs:
        rows.append(("Missing blobs", f"{report.missing_blobs} (run `roost check`)"))
    grid = output.table("Statistic", "Value", numeric=("Value",))
    for name, value in rows:
        output.add_row(grid, name, value)
    output.print_table(grid)


def stats_json(report: RepoStats) -> dict[str, Any]:
    return {
        "snapshots": report.snapshots,
        "files": report.files,
        "logical_size": report.logical_size,
        "unique_size": report.unique_size,
        "stored_size": report.stored_size,
        "dedup_ratio": report.dedup_ratio,
        "compression_ratio": report.compression_ratio,
        "blobs": report.blobs,
        "packs": report.packs,
        "missing_blobs": report.missing_blobs,
    }


def check(
    ctx: typer.Context,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also read and verify every pack.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Verify the repository's structure (and with --read-data all stored data)."""
    from roost.engine.check import check_repository

    cli = session(ctx, json_output)
    repo = cli.open()
    if cli.json:
        report = check_repository(repo, read_data=read_data)
        output.print_json({"ok": report.ok, **asdict(report)})
    else:
        with output.stderr_console().status("checking") as status:
            report = check_repository(repo, read_data=read_data, progress=status.update)
        _print_check(report)
    if not report.ok:
        raise CheckFailed(f"check found {len(report.errors)} errors")


def _print_check(report: CheckReport) -> None:
    for note in report.notes:
        output.say(f"note: {note}")
    for error in report.errors:
        output.say(f"error: {error.object}: {error.message}", "red")
        for path in error.affected_files:
            output.say(f"  affects {output.show_path(path)}")
    read = f", {report.packs_read} packs read" if report.packs_read else ""
    output.say(
        f"checked {report.snapshots} snapshots, {report.trees} trees, {report.blobs} blobs{read}: "
        + (f"{len(report.errors)} errors" if report.errors else "no errors")
    )


def repair_index(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Rebuild the index from the pack headers (after lost or damaged index files)."""
    cli = session(ctx, json_output)
    repo = cli.open()
    failures: list[dict[str, str]] = []

    def on_error(key: str, exc: Exception) -> None:
        failures.append({"pack": key, "error": str(exc)})
        if not cli.json:
            output.warn(f"skipped pack {key}: {exc}")

    packs, blobs = rebuild_index(repo, on_error)
    if cli.json:
        output.print_json({"packs": packs, "blobs": blobs, "unreadable_packs": failures})
        return
    output.say(f"rebuilt the index: {packs} packs, {blobs} blobs")
    if failures:
        output.warn(f"{len(failures)} packs could not be read; run `roost check --read-data`")

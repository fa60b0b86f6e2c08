"""`roost ctl` commands for work: backup now, jobs (list, watch, wait), missed files, cancel,
snapshots and their contents, restores."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from roost.cli import output
from roost.cli.context import JsonOption
from roost.cli.ctl_app import (
    get,
    open_api,
    post,
    print_fields,
    print_rows,
    rows_table,
    show,
    text,
    wants_json,
    when,
)
from roost.cli.ctl_client import Api, CtlError, api_path, present
from roost.errors import UsageError
from roost.protocol.agent_api import FINAL_STATES, JobState

WAIT_POLL_SECONDS = 0.5  # between two asks of a server that answers without waiting
# Each ask waits this long on the server for the job's state to change (GET /jobs/{id}?wait=):
# the end is seen as it happens rather than at the next poll.
WAIT_SECONDS = 30.0
WATCH_SECONDS = 1.0
EXIT_WITH_ERRORS = 3  # `job --wait`: the job succeeded but missed files

JobArg = Annotated[str, typer.Argument(metavar="JOB", help="Job id.")]
SetArg = Annotated[str, typer.Argument(metavar="SET", help="Backup set name.")]
Conflict = Literal["overwrite", "skip", "rename", "if-newer"]


def register(app: typer.Typer) -> None:
    app.command("backup-now")(backup_now)
    app.command("jobs")(jobs)
    app.command("job")(job)
    app.command("missed")(missed)
    app.command("cancel")(cancel)
    app.command("snapshots")(snapshots)
    app.command("ls")(ls)
    app.command("restore")(restore)


def backup_now(ctx: typer.Context, set_name: SetArg, json_output: JsonOption = False) -> None:
    """Back up a set now; prints the job (wait for it with `roost ctl job ID --wait`)."""
    queued = post(ctx, api_path("sets", set_name, "backup"))
    show(ctx, json_output, queued, _print_queued)


def _print_queued(job: dict[str, Any]) -> None:
    output.say(f"{job['kind']} job {job['id']} of set {job['set']}: {job['state']}")
    output.say(f"follow it with `roost ctl job {job['id']} --wait`")


# -- jobs -----------------------------------------------------------------------------------


def jobs(
    ctx: typer.Context,
    state: Annotated[
        JobState | None, typer.Option("--state", help="Only jobs in this state.")
    ] = None,
    set_name: Annotated[str | None, typer.Option("--set", help="Only this backup set.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most N jobs.")] = 50,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh every second until Ctrl-C (not with --json).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    query = {"state": state, "set": set_name, "agent": agent, "limit": limit}
    if watch and not wants_json(ctx, json_output):
        _watch(ctx, query)
        return
    show(ctx, json_output, get(ctx, "/jobs", **query), _print_jobs)


def _jobs_table(listed: list[dict[str, Any]]) -> Table:
    columns = ("ID", "KIND", "SET", "AGENT", "STATE", "LEVEL", "CREATED", "FINISHED", "DONE")
    rows = (
        (
            j["id"],
            j["kind"],
            j["set"],
            j["agent"],
            _state(j),
            text(j["level"]),
            when(j["created_at"]),
            when(j["finished_at"]),
            _done(j),
        )
        for j in listed
    )
    return rows_table(columns, rows)


def _print_jobs(listed: list[dict[str, Any]]) -> None:
    if listed:
        output.print_table(_jobs_table(listed))
    else:
        output.say("no jobs")


def _state(job: dict[str, Any]) -> str:
    state: str = job["state"]
    if job["cancel_requested"] and not _final(job):
        return f"{state} (cancelling)"
    return state


def _done(job: dict[str, Any]) -> str:
    progress = job["progress"]
    return f"{progress['files']} files, {output.format_size(progress['bytes'])}"


def _final(job: dict[str, Any]) -> bool:
    return job["state"] in FINAL_STATES


def _watch(ctx: typer.Context, query: dict[str, Any]) -> None:
    from rich.live import Live  # only here: the other commands do not need it

    try:
        with open_api(ctx) as api:
            table = _jobs_table(api.get("/jobs", **query))
            with Live(table, console=output.stdout_console(), auto_refresh=False) as live:
                while True:
                    time.sleep(WATCH_SECONDS)
                    live.update(_jobs_table(api.get("/jobs", **query)), refresh=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends


def job(
    ctx: typer.Context,
    job_id: JobArg,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait until the job ends; exit 0 if it succeeded, 3 if it succeeded with "
            "errors (missed files), 1 otherwise.",
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="With --wait: give up after S seconds (exit 1)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show a job with its log."""
    as_json = wants_json(ctx, json_output)
    with open_api(ctx) as api:
        found = _wait(api, job_id, timeout, quiet=as_json) if wait else _get_job(api, job_id)
    show(ctx, json_output, found, _print_job)
    if wait and found["state"] != "succeeded":
        raise typer.Exit(EXIT_WITH_ERRORS if found["state"] == "succeeded_with_errors" else 1)


def _get_job(api: Api, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = api.get(api_path("jobs", job_id))
    return found


def _wait(api: Api, job_id: str, timeout: float | None, *, quiet: bool) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = ""
    wait = 0.0  # the first ask shows the state at once
    while True:
        asked = time.monotonic()
        found: dict[str, Any] = api.get(api_path("jobs", job_id), wait=wait)
        if _final(found):
            return found
        changed, seen = found["state"] != seen, found["state"]
        if changed and not quiet:
            output.say(f"job {job_id}: {seen}", err=True)
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise CtlError(f"job {job_id} is still {seen} after {timeout:g} s")
        if wait and not changed and now - asked < min(wait, WAIT_POLL_SECONDS):
            time.sleep(WAIT_POLL_SECONDS)  # the same state at once: a server without ?wait=
        wait = WAIT_SECONDS if deadline is None else max(0.0, min(WAIT_SECONDS, deadline - now))


def _print_job(found: dict[str, Any]) -> None:
    reason = f" ({found['reason']})" if found["reason"] else ""
    level = (
        f"{found['level']} ({found['level_reason']})" if found["level_reason"] else found["level"]
    )
    print_fields(
        [
            ("job", found["id"]),
            ("kind", f"{found['kind']}, triggered {found['trigger']}, attempt {found['attempt']}"),
            ("state", _state(found) + reason),
            ("set", found["set"]),
            ("agent", found["agent"]),
            ("level", text(level)),
            ("created", when(found["created_at"])),
            ("started", when(found["started_at"])),
            ("finished", when(found["finished_at"])),
            ("done", _done(found)),
            ("snapshot", text(found["snapshot_id"])),
            *((f"  {key}", text(value)) for key, value in found["summary"].items()),
        ]
    )
    for line in found.get("log", []):
        output.say(f"{when(line['at'])} {line['level']:<7} {line['message']}")


def missed(ctx: typer.Context, job_id: JobArg, json_output: JsonOption = False) -> None:
    """List the files a backup job could not read (the next backup reads them again)."""
    rows = get(ctx, api_path("jobs", job_id, "missed"))
    show(ctx, json_output, rows, _print_missed)


def _print_missed(rows: list[dict[str, Any]]) -> None:
    table_rows = ((row["path"], row["reason"]) for row in rows)
    print_rows(("PATH", "REASON"), table_rows, "no missed files")


def cancel(ctx: typer.Context, job_id: JobArg, json_output: JsonOption = False) -> None:
    """Cancel a job: a queued one at once, a running one at the agent's next step."""
    found = post(ctx, api_path("jobs", job_id, "cancel"))
    show(ctx, json_output, found, lambda j: output.say(f"job {j['id']}: {_state(j)}"))


# -- snapshots and restores -----------------------------------------------------------------


def snapshots(ctx: typer.Context, set_name: SetArg, json_output: JsonOption = False) -> None:
    """List a backup set's snapshots, oldest first."""
    show(ctx, json_output, get(ctx, api_path("sets", set_name, "snapshots")), _print_snapshots)


def _print_snapshots(rows: list[dict[str, Any]]) -> None:
    table_rows = (
        (s["short_id"], when(s["time"]), text(s["paths"]), _size(s["summary"].get("bytes_total")))
        for s in rows
    )
    print_rows(("ID", "TIME", "PATHS", "SIZE"), table_rows, "no snapshots")


def _size(value: Any) -> str:
    return output.format_size(value) if isinstance(value, int) else "-"


def ls(
    ctx: typer.Context,
    set_name: SetArg,
    snapshot: Annotated[str, typer.Argument(help="Snapshot id (prefix) or 'latest'.")],
    path: Annotated[str, typer.Argument(help="Directory in the snapshot.")] = "/",
    json_output: JsonOption = False,
) -> None:
    """List a directory of a snapshot."""
    entries = get(ctx, api_path("sets", set_name, "snapshots", snapshot, "ls"), path=path)
    show(ctx, json_output, entries, _print_entries)


def _print_entries(entries: list[dict[str, Any]]) -> None:
    table_rows = (
        (
            e["type"],
            f"{e['mode']:04o}",
            _size(e["size"]) if e["type"] == "file" else "-",
            when(e["mtime"]),
            output.show_path(e["path"]),
        )
        for e in entries
    )
    print_rows(("TYPE", "MODE", "SIZE", "MODIFIED", "PATH"), table_rows, "empty directory")


def restore(
    ctx: typer.Context,
    set_name: SetArg,
    snapshot: Annotated[str, typer.Option("--snapshot", help="Snapshot id (prefix) or 'latest'.")],
    target: Annotated[str, typer.Option("--target", help="Absolute directory on the agent.")],
    conflict: Annotated[
        Conflict, typer.Option("--conflict", help="What to do with files that exist already.")
    ],
    before: Annotated[
        str | None,
        typer.Option("--before", help="The latest snapshot at or before this ISO time."),
    ] = None,
    paths: Annotated[
        list[str] | None, typer.Option("--path", help="Restore only this path (repeatable).")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Restore on this agent (default: the set's).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Restore from a snapshot on an agent; prints the job."""
    body = present(
        set=set_name,
        snapshot=snapshot,
        before=_aware(before),
        paths=paths or None,
        agent=agent,
        target=target,
        conflict=conflict,
    )
    show(ctx, json_output, post(ctx, "/restores", body), _print_queued)


def _aware(value: str | None) -> str | None:
    """An ISO time; without an offset it is this machine's local time."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--before: {value!r} is not an ISO time such as 2026-03-01T18:00 or 2026-03-01"
        ) from None
    return (moment if moment.tzinfo else moment.astimezone()).isoformat()

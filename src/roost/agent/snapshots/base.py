"""Snapshot providers: a consistent, read-only view of a job's sources (DESIGN.md §1, steps 4, 6-8).

Before scanning, the agent asks the first provider that applies (VSS on Windows; btrfs or LVM
on Linux) for a snapshot, validates it, and scans the snapshot instead of the live files, so
open and locked files are read as they were at one instant. Anything that goes wrong falls
back to a live scan *and says why in the job log*: a backup must never fail just because a
snapshot could not be taken. Snapshots are always deleted afterwards (``release_snapshot``);
ones left behind by a crash are removed when the agent starts (``cleanup_leftovers``).

Providers run system tools through the small ``CommandRunner`` interface, so every command
sequence is testable with a fake on any platform; ``SubprocessRunner`` is the real one. The
mountinfo parser and the JSON state file at the bottom are shared by the Linux providers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from roost.errors import RoostError

LIVE = "live"
FALLBACK = "falling back to a live scan"
_REASON_LIMIT = 600


class SnapshotError(RoostError):
    """The snapshot could not be created, validated or deleted; the backup used a live scan."""


class CommandFailed(SnapshotError):
    """A system command exited with an error."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = one_line(stderr) or "no error output"
        super().__init__(f"`{shlex.join(argv)}` exited {returncode}: {detail}")


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    """Runs one system command; the seam that lets tests script btrfs, lvm, sc and vssadmin."""

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 120) -> CommandResult:
        """Run ``argv`` (no shell); raise CommandFailed when ``check`` and it exits non-zero."""
        ...


class SubprocessRunner:
    """The real runner: no shell (arguments are never re-parsed), text output, C locale.

    A missing program is reported as exit 127 and a timeout as exit 124 (the shell
    conventions), so callers see one failure shape whatever went wrong.
    """

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 120) -> CommandResult:
        result = _run_process(argv, timeout)
        if check and result.returncode != 0:
            raise CommandFailed(argv, result.returncode, result.stderr or result.stdout)
        return result


def _run_process(argv: list[str], timeout: float) -> CommandResult:
    env = None if sys.platform == "win32" else {**os.environ, "LC_ALL": "C"}
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env=env,
        )
    except (FileNotFoundError, PermissionError):
        # PermissionError: an untraversable directory on PATH hides the tool just the same
        return CommandResult(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(124, "", f"timed out after {timeout:g} s")
    return CommandResult(done.returncode, done.stdout, done.stderr)


@dataclass
class PreparedSnapshot:
    """What the scanner reads for one job, and what must be deleted when the job ends."""

    provider: str  # "btrfs" | "lvm" | "vss" | "live"
    source_paths: list[str]  # the paths the user asked for
    read_paths: dict[str, str]  # source path -> where to read it (inside the snapshot)
    handles: list[str] = field(default_factory=list)  # provider ids to delete afterwards
    log: list[str] = field(default_factory=list)  # lines for the job log


@runtime_checkable
class SnapshotProvider(Protocol):
    """One snapshot technology. ``create`` either returns a complete snapshot or raises having
    removed whatever it made, so a failure never leaks a half-built snapshot."""

    name: str

    def unsupported_reason(self, paths: list[str]) -> str | None:
        """None when this provider can snapshot ``paths`` here, else why not (for the job log)."""
        ...

    def applicable(self, paths: list[str]) -> bool:
        """Cheap check: can this provider snapshot these paths on this machine?"""
        ...

    def create(self, paths: list[str], job_id: str) -> PreparedSnapshot: ...

    def validate(self, snap: PreparedSnapshot) -> None:
        """Raise SnapshotError if the snapshot is missing, writable or lacks a source path."""
        ...

    def delete(self, snap: PreparedSnapshot) -> None: ...

    def cleanup_leftovers(self) -> list[str]:
        """Remove snapshots a crash left behind (Roost-named); return what was removed."""
        ...


def live_snapshot(paths: list[str], log: list[str] | None = None) -> PreparedSnapshot:
    """The no-snapshot result: every path is read where it lives, nothing to delete."""
    return PreparedSnapshot(LIVE, list(paths), {p: p for p in paths}, [], list(log or []))


def prepare_snapshot(
    providers: list[SnapshotProvider], paths: list[str], job_id: str, mode: str
) -> PreparedSnapshot:
    """Snapshot ``paths`` with the first applicable provider, or explain why the job reads live.

    Never raises for a snapshot problem: the job log carries the reason instead (steps 6-7).
    """
    if mode == "never":
        return live_snapshot(paths, ["snapshot mode is 'never'; using a live scan"])
    if mode != "auto":
        raise ValueError(f"unknown snapshot mode {mode!r} (expected 'auto' or 'never')")
    log: list[str] = []
    provider = _first_applicable(providers, paths, log)
    if provider is None:
        log.append(f"no snapshot provider applies; {FALLBACK}")
        return live_snapshot(paths, log)
    return _snapshot_or_live(provider, paths, job_id, log)


def _first_applicable(
    providers: list[SnapshotProvider], paths: list[str], log: list[str]
) -> SnapshotProvider | None:
    for provider in providers:
        try:
            reason = provider.unsupported_reason(paths)
        except Exception as exc:  # a broken probe must not fail the backup
            reason = describe(exc)
        if reason is None:
            return provider
        log.append(f"{provider.name} snapshot not possible: {reason}")
    return None


def _snapshot_or_live(
    provider: SnapshotProvider, paths: list[str], job_id: str, log: list[str]
) -> PreparedSnapshot:
    try:
        snap = provider.create(paths, job_id)
    except Exception as exc:
        log.extend(getattr(exc, "snapshot_log", []))
        log.append(f"{provider.name} snapshot failed: {describe(exc)}; {FALLBACK}")
        log.extend(getattr(exc, "rollback_log", []))
        return live_snapshot(paths, log)
    log.extend(snap.log)
    try:
        provider.validate(snap)
    except Exception as exc:
        log.append(f"{provider.name} snapshot failed validation: {describe(exc)}; {FALLBACK}")
        log.extend(release_snapshot([provider], snap))
        return live_snapshot(paths, log)
    log.append(f"{provider.name} snapshot validated; scanning it instead of the live files")
    snap.log = log
    return snap


def release_snapshot(providers: list[SnapshotProvider], snap: PreparedSnapshot) -> list[str]:
    """Delete the job's snapshot (step 8, on success and on failure); never raises.

    Returns the lines for the job log, errors included. A snapshot that could not be deleted
    stays recorded and is removed by ``cleanup_leftovers`` when the agent next starts.
    """
    if snap.provider == LIVE or not snap.handles:
        return []
    what = ", ".join(snap.handles)
    provider = next((p for p in providers if p.name == snap.provider), None)
    if provider is None:
        return [f"cannot delete {snap.provider} snapshot {what}: no such provider on this agent"]
    try:
        provider.delete(snap)
    except Exception as exc:
        return [
            f"{snap.provider} snapshot delete failed: {describe(exc)}; "
            "the agent retries when it next starts"
        ]
    snap.handles = []  # a second release is a no-op
    return [f"{snap.provider} snapshot deleted: {what}"]


def cleanup_all(providers: list[SnapshotProvider]) -> list[str]:
    """Agent start: remove every provider's crash leftovers; log lines, never raises."""
    lines: list[str] = []
    for provider in providers:
        try:
            removed = provider.cleanup_leftovers()
        except Exception as exc:
            lines.append(f"{provider.name} leftover cleanup failed: {describe(exc)}")
            continue
        lines.extend(f"removed leftover {provider.name} snapshot {item}" for item in removed)
    return lines


def roll_back(provider: SnapshotProvider, snap: PreparedSnapshot, exc: BaseException) -> None:
    """Undo a half-done ``create``, keeping its log on the error for ``prepare_snapshot``.

    ``exc.snapshot_log`` holds what happened before the failure, ``exc.rollback_log`` what
    the undo did, so the job log tells the whole story (e.g. the VSS service was started).
    """
    undo_lines = []
    if snap.handles:
        what = ", ".join(snap.handles)
        try:
            provider.delete(snap)
            undo_lines.append(f"{provider.name} partial snapshot removed: {what}")
        except Exception as undo:
            undo_lines.append(
                f"{provider.name} partial snapshot {what} was not removed: {describe(undo)}; "
                "the agent retries when it next starts"
            )
    with contextlib.suppress(AttributeError):
        setattr(exc, "snapshot_log", list(snap.log))  # noqa: B010 - attaching to any exception
        setattr(exc, "rollback_log", undo_lines)  # noqa: B010


def describe(exc: BaseException) -> str:
    """One log-friendly line for an exception; foreign errors keep their type for diagnosis."""
    text = one_line(str(exc))
    if isinstance(exc, RoostError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def one_line(text: str) -> str:
    """Join a tool's multi-line output into one bounded log line."""
    joined = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(joined) > _REASON_LIMIT:
        return joined[: _REASON_LIMIT - 3] + "..."
    return joined


_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_job_id(job_id: str) -> str:
    """Job ids become LV names and directory names: refuse anything that could escape them."""
    if not _JOB_ID.fullmatch(job_id):
        raise SnapshotError(f"job id {job_id!r} is not usable in a snapshot name")
    return job_id


def unique(items: Iterable[str]) -> list[str]:
    """The distinct items in first-seen order (one snapshot per volume, in a stable order)."""
    return list(dict.fromkeys(items))


# --- /proc/self/mountinfo: which file system (and device) holds a path --------------------

MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class MountEntry:
    mount_point: str
    root: str  # the directory of the file system mounted here: "/" unless a subvolume or bind
    fstype: str
    source: str  # the device, e.g. /dev/mapper/vg0-data
    options: frozenset[str]  # per-mount options: "ro" or "rw", ...


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse mountinfo(5): the fields after the variable-length optional ones follow ``-``."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        entries.append(
            MountEntry(
                mount_point=_unescape(fields[4]),
                root=_unescape(fields[3]),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                options=frozenset(fields[5].split(",")),
            )
        )
    return entries


def _unescape(value: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), value)


def read_mountinfo(path: Path = MOUNTINFO) -> list[MountEntry]:
    return parse_mountinfo(path.read_text(encoding="utf-8", errors="surrogateescape"))


def mount_of(entries: list[MountEntry], path: str) -> MountEntry | None:
    """The mount that holds the absolute, resolved ``path``: the longest matching mount point,
    and of stacked mounts on one point the last (the visible one)."""
    best: MountEntry | None = None
    for entry in entries:
        if within(path, entry.mount_point) and (
            best is None or len(entry.mount_point) >= len(best.mount_point)
        ):
            best = entry
    return best


def mounted_at(entries: list[MountEntry], mount_point: str) -> MountEntry | None:
    """The visible mount exactly at ``mount_point``, if any."""
    found = [e for e in entries if e.mount_point == mount_point]
    return found[-1] if found else None


def within(path: str, directory: str) -> bool:
    """Is ``path`` ``directory`` or below it (string test on normalised absolute paths)?"""
    return directory == "/" or path == directory or path.startswith(directory.rstrip("/") + "/")


# --- a small JSON list on disk: what was created, so a crash cannot leak it ----------------


class StateFile:
    """A JSON list of handles, rewritten atomically; shared by threads of one agent.

    Providers record a snapshot *before* creating it, so a crash at any point leaves a record
    that ``cleanup_leftovers`` finds.
    """

    _locks: ClassVar[dict[Path, threading.Lock]] = {}
    _locks_guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with StateFile._locks_guard:
            self._lock = StateFile._locks.setdefault(self.path.resolve(), threading.Lock())

    def entries(self) -> list[str]:
        with self._lock:
            return self._load()

    def add(self, handle: str) -> None:
        self._update(lambda items: unique([*items, handle]))

    def remove(self, handle: str) -> None:
        self._update(lambda items: [item for item in items if item != handle])

    def _update(self, change: Callable[[list[str]], list[str]]) -> None:
        with self._lock:
            self._store(change(self._load()))

    def _load(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise SnapshotError(
                f"snapshot state file {self.path} is unreadable ({exc}); remove leftover "
                "snapshots by hand, then delete the file"
            ) from exc
        return [str(item) for item in data.get("entries", [])]

    def _store(self, items: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"version": 1, "entries": items}, out, indent=1)
                out.flush()
                os.fsync(out.fileno())  # the record must exist before the snapshot does
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def iter_roost_dirs(directory: str, prefix: str) -> Iterator[str]:
    """Entries of ``directory`` whose names start with ``prefix`` (sorted; none if absent)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix):
            yield os.path.join(directory, name)

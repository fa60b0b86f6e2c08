"""Backup and restore jobs end to end: real files, a real repository behind a fake server.

The fake server (fake_server.py) answers the agent routes from memory, storing objects in a
MemoryBackend that holds a real repository, so every byte goes through the agent's remote
storage, the engine and back.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import httpx
import pytest
from tests.unit.agent.fake_server import FakeServer, detail

from roost.agent.context import JobContext
from roost.agent.jobs import execute_job
from roost.agent.platform import fake_platform
from roost.agent.snapshots import PreparedSnapshot, prepare_snapshot
from roost.agent.throughput import history_keys
from roost.protocol.agent_api import JobAssignment, JobEvent, MissedFile, RestoreParams

FILES = {
    "a.txt": b"alpha\n",
    "sub/b.bin": bytes(range(256)) * 1200,  # 300 KiB: more than one chunk's minimum
    "sub/deeper/c.txt": b"",
    "skip.tmp": b"excluded by the set's rules",
}
KEPT = {k: v for k, v in FILES.items() if not k.endswith(".tmp")}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def ctx(server: FakeServer, tmp_path: Path) -> JobContext:
    home = tmp_path / "agent-home"
    home.mkdir()
    return JobContext(
        client=server.client(),
        home=home,
        platform=fake_platform(hostname="fileserver-1"),
        providers=[],
        progress_interval=0.0,  # every callback may send: small trees still show progress
        retry_sleep=lambda _seconds: None,
        final_retry_seconds=0.0,
    )


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", FILES)


def backup_job(src: Path, job_id: str = "job-1", **fields: object) -> JobAssignment:
    base: dict[str, object] = {
        "id": job_id,
        "kind": "backup",
        "set_id": "set-1",
        "set_name": "docs",
        "paths": [str(src)],
        "excludes": ["*.tmp"],
        "tags": ["roost-set=set-1"],
        "snapshot_mode": "never",
    }
    return JobAssignment.model_validate({**base, **fields})


def restore_job(job_id: str, snapshot_id: str, target: str, **params: object) -> JobAssignment:
    return JobAssignment(
        id=job_id,
        kind="restore",
        set_id="set-1",
        set_name="docs",
        restore=RestoreParams.model_validate(
            {"snapshot_id": snapshot_id, "target": target, **params}
        ),
    )


def final(server: FakeServer, job_id: str) -> JobEvent:
    return server.events[job_id][-1]


def log_messages(server: FakeServer, job_id: str) -> list[str]:
    return [line.message for event in server.events[job_id] for line in event.log]


def assert_event_order(server: FakeServer, job_id: str, final_state: str) -> None:
    """running, then the estimate, then only progress, then the final state."""
    kinds = server.states(job_id)
    assert kinds[0] == "running"
    assert kinds[1] == "estimate"
    assert kinds[-1] == final_state
    assert set(kinds[2:-1]) == {"progress"}, kinds


# -- backup -------------------------------------------------------------------------------


def test_backup_reports_running_estimate_progress_and_snapshot(
    ctx: JobContext, server: FakeServer, src: Path
) -> None:
    assert execute_job(ctx, backup_job(src)) == "succeeded"

    assert_event_order(server, "job-1", "succeeded")
    events = server.events["job-1"]
    size = sum(len(v) for v in KEPT.values())
    assert events[1].estimate is not None
    assert events[1].estimate.model_dump() == {"files": 3, "bytes": size, "seconds": None}
    last_progress = events[-2].progress
    assert last_progress is not None
    assert (last_progress.files_done, last_progress.bytes_done) == (3, size)
    assert last_progress.eta_seconds == 0.0

    done = events[-1]
    assert done.result is not None and done.result.snapshot_id is not None
    assert done.missed == [] and done.error is None
    snap = server.repo.load_snapshot(done.result.snapshot_id)
    assert snap.paths == [str(src)]
    assert snap.tags == ["roost-set=set-1"]
    assert snap.hostname == "fileserver-1"
    assert snap.excludes == ["*.tmp"]
    assert done.result.summary["files_new"] == 3
    assert done.result.summary["snapshot_provider"] == "live"
    live_lines = prepare_snapshot([], [str(src)], "job-1", "never").log  # the provider's words
    assert live_lines and set(live_lines) <= set(log_messages(server, "job-1"))
    assert f"snapshot {snap.short_id} saved" in log_messages(server, "job-1")
    assert list(server.storage.list("leases/")) == []  # the lease was released


def test_estimate_uses_the_throughput_history(
    ctx: JobContext, server: FakeServer, src: Path
) -> None:
    ctx.history.record(1000, 1.0, history_keys("set-1", "full"))  # 1000 bytes per second
    execute_job(ctx, backup_job(src))
    estimate = server.events["job-1"][1].estimate
    assert estimate is not None
    assert estimate.seconds == pytest.approx(estimate.bytes / 1000)


def test_incremental_backup_reuses_the_parent_and_reads_forced_files(
    ctx: JobContext, server: FakeServer, src: Path
) -> None:
    execute_job(ctx, backup_job(src, "job-1"))
    parent = final(server, "job-1").result
    assert parent is not None
    forced = str(src / "a.txt")
    job = backup_job(
        src, "job-2", level="incremental", parent_snapshot=parent.snapshot_id, force_read=[forced]
    )
    assert execute_job(ctx, job) == "succeeded"
    result = final(server, "job-2").result
    assert result is not None
    assert (result.summary["files_changed"], result.summary["files_unchanged"]) == (1, 2)
    assert server.repo.load_snapshot(str(result.snapshot_id)).parent == parent.snapshot_id


def test_unusable_parent_means_a_full_read_with_a_log_line(
    ctx: JobContext, server: FakeServer, src: Path
) -> None:
    job = backup_job(src, level="incremental", parent_snapshot="ab" * 32)
    assert execute_job(ctx, job) == "succeeded"
    result = final(server, "job-1").result
    assert result is not None and result.summary["files_new"] == 3
    assert any(
        m.startswith("parent snapshot abababab cannot be used (")
        and m.endswith("); every file is read as in a full backup")
        for m in log_messages(server, "job-1")
    )


def test_unreadable_file_is_missed_with_its_reason(
    ctx: JobContext, server: FakeServer, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = os.fsencode(src / "sub" / "b.bin")
    real_open = os.open

    def open_refusing_one(path: str | bytes, flags: int, *args: int, **kwargs: object) -> int:
        if os.fsencode(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_refusing_one)
    assert execute_job(ctx, backup_job(src)) == "succeeded_with_errors"

    done = final(server, "job-1")
    assert done.state == "succeeded_with_errors"
    assert done.missed == [MissedFile(path=os.fsdecode(locked), reason="permission denied")]
    assert done.result is not None and done.result.summary["files_missed"] == 1
    assert "1 files could not be read; the next backup reads them again" in log_messages(
        server, "job-1"
    )
    snap = server.repo.load_snapshot(str(done.result.snapshot_id))
    assert snap.missed == [{"path": os.fsdecode(locked), "reason": "permission denied"}]


def test_non_utf8_missed_path_round_trips_through_the_wire_form(
    ctx: JobContext, server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_tree(tmp_path / "src", {"ok.txt": b"fine"})
    odd = os.path.join(os.fsencode(src), b"caf\xe9.txt")
    with open(odd, "wb") as out:
        out.write(b"latin-1 name")
    real_open = os.open

    def refuse(path: str | bytes, flags: int, *args: int, **kwargs: object) -> int:
        if os.fsencode(path) == odd:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refuse)
    execute_job(ctx, backup_job(src, excludes=[]))
    missed = final(server, "job-1").missed
    assert [m.path for m in missed] == [f"{src}/caf\\xe9.txt"]

    monkeypatch.setattr(os, "open", real_open)
    parent = final(server, "job-1").result
    assert parent is not None
    job = backup_job(
        src,
        "job-2",
        excludes=[],
        parent_snapshot=parent.snapshot_id,
        force_read=[m.path for m in missed],
    )
    assert execute_job(ctx, job) == "succeeded"


def test_cancel_in_a_progress_answer_stops_the_backup(
    ctx: JobContext, server: FakeServer, src: Path
) -> None:
    reason = "stopped: the backup window closed"
    server.cancel_when = lambda _job, event: reason if event.progress is not None else None
    assert execute_job(ctx, backup_job(src)) == "cancelled"

    assert server.states("job-1") == ["running", "estimate", "progress", "cancelled"]
    done = final(server, "job-1")
    assert done.error == reason
    assert done.result is None
    assert f"job cancelled: {reason}" in log_messages(server, "job-1")
    assert server.repo.snapshot_ids() == []
    assert list(server.storage.list("leases/")) == []


def test_agent_stop_aborts_the_job(ctx: JobContext, server: FakeServer, src: Path) -> None:
    def stop_after_estimate(_job: str, event: JobEvent) -> None:
        if event.estimate is not None:
            ctx.stop.set()

    server.cancel_when = stop_after_estimate
    assert execute_job(ctx, backup_job(src)) == "aborted"
    assert final(server, "job-1").error == "the agent was stopped during the job"
    assert server.repo.snapshot_ids() == []


class RecordingProvider:
    """A snapshot provider that records what it is asked; optionally reads from a copy."""

    name = "fakesnap"

    def __init__(self, copy_to: Path | None = None) -> None:
        self.copy_to = copy_to
        self.created: list[str] = []
        self.deleted: list[list[str]] = []

    def unsupported_reason(self, paths: list[str]) -> str | None:
        return None

    def applicable(self, paths: list[str]) -> bool:
        return True

    def create(self, paths: list[str], job_id: str) -> PreparedSnapshot:
        self.created.append(job_id)
        read_paths = {p: p for p in paths}
        if self.copy_to is not None:
            for path in paths:
                copy = self.copy_to / Path(path).name
                shutil.copytree(path, copy)
                read_paths[path] = str(copy)
        return PreparedSnapshot(self.name, list(paths), read_paths, [f"snap-{job_id}"], [])

    def validate(self, snap: PreparedSnapshot) -> None:
        return None

    def delete(self, snap: PreparedSnapshot) -> None:
        self.deleted.append(list(snap.handles))

    def cleanup_leftovers(self) -> list[str]:
        return []


def test_snapshot_is_released_when_the_backup_fails(
    ctx: JobContext, server: FakeServer, src: Path
) -> None:
    provider = RecordingProvider()
    ctx.providers = [provider]

    def disk_full(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PUT" and "/storage/data/" in request.url.path:
            return detail(507, "disk full")
        return None

    server.before = disk_full
    assert execute_job(ctx, backup_job(src, snapshot_mode="auto")) == "failed"

    assert provider.created == ["job-1"]
    assert provider.deleted == [["snap-job-1"]]
    done = final(server, "job-1")
    assert done.error is not None
    assert done.error.startswith(
        "the server refused to store https://roost.test/api/v1/agent/storage/data/"
    )
    assert done.error.endswith("(HTTP 507): disk full")
    messages = log_messages(server, "job-1")
    released = [i for i, m in enumerate(messages) if "snap-job-1" in m]  # the release line
    assert released and released[-1] < messages.index(f"job failed: {done.error}")
    assert list(server.storage.list("leases/")) == []


def test_snapshot_is_released_after_success(ctx: JobContext, server: FakeServer, src: Path) -> None:
    provider = RecordingProvider()
    ctx.providers = [provider]
    assert execute_job(ctx, backup_job(src, snapshot_mode="auto")) == "succeeded"
    assert provider.deleted == [["snap-job-1"]]
    result = final(server, "job-1").result
    assert result is not None and result.summary["snapshot_provider"] == "fakesnap"


def test_snapshot_with_other_read_paths_still_records_the_source_paths(
    ctx: JobContext, server: FakeServer, src: Path, tmp_path: Path
) -> None:
    snapshots = tmp_path / "snapshot-mount"
    snapshots.mkdir()
    provider = RecordingProvider(copy_to=snapshots)
    ctx.providers = [provider]
    assert execute_job(ctx, backup_job(src, snapshot_mode="auto")) == "succeeded"
    result = final(server, "job-1").result
    assert result is not None
    snap = server.repo.load_snapshot(str(result.snapshot_id))
    assert snap.paths == [str(src)]  # never the snapshot's mount path
    assert provider.deleted == [["snap-job-1"]]
    assert result.summary["snapshot_provider"] == "fakesnap"


def test_relative_backup_path_fails_before_touching_anything(
    ctx: JobContext, server: FakeServer
) -> None:
    assert execute_job(ctx, backup_job(Path("relative/dir"))) == "failed"
    assert final(server, "job-1").error == (
        "backup path 'relative/dir' must be absolute and contain no '..'"
    )
    assert ("GET", "/repository") not in server.requests


def test_repository_key_refused_fails_the_job(
    ctx: JobContext, server: FakeServer, src: Path
) -> None:
    server.before = lambda r: (
        detail(403, "agent disabled") if r.url.path.endswith("/repository") else None
    )
    assert execute_job(ctx, backup_job(src)) == "failed"
    assert server.states("job-1") == ["failed"]
    assert final(server, "job-1").error == (
        "the server refused the repository key request (HTTP 403): agent disabled"
    )


def test_key_material_is_never_written_to_the_agent_home(
    ctx: JobContext, server: FakeServer, src: Path
) -> None:
    execute_job(ctx, backup_job(src))
    secret = server.repo.key.master.to_json()["encryption"]
    assert isinstance(secret, str)
    for path in ctx.home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes()


# -- restore ------------------------------------------------------------------------------


@pytest.fixture
def snapshot_id(ctx: JobContext, server: FakeServer, src: Path) -> str:
    execute_job(ctx, backup_job(src, "backup-0"))
    result = final(server, "backup-0").result
    assert result is not None and result.snapshot_id is not None
    return result.snapshot_id


def restored_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_restore_writes_the_snapshot_byte_for_byte(
    ctx: JobContext, server: FakeServer, src: Path, snapshot_id: str, tmp_path: Path
) -> None:
    target = tmp_path / "restore"
    assert execute_job(ctx, restore_job("r-1", snapshot_id, str(target))) == "succeeded"
    assert_event_order(server, "r-1", "succeeded")
    assert restored_files(target / src.relative_to("/")) == KEPT
    done = final(server, "r-1")
    assert done.result is not None and done.result.snapshot_id == snapshot_id
    assert done.result.summary["files"] == 3
    assert done.result.summary["bytes_written"] == sum(len(v) for v in KEPT.values())


def test_restore_of_selected_paths(
    ctx: JobContext, server: FakeServer, src: Path, snapshot_id: str, tmp_path: Path
) -> None:
    target = tmp_path / "restore"
    job = restore_job("r-1", snapshot_id[:10], str(target), paths=[str(src / "sub" / "deeper")])
    assert execute_job(ctx, job) == "succeeded"
    assert restored_files(target / src.relative_to("/")) == {"sub/deeper/c.txt": b""}
    assert "estimate" not in server.states("r-1")  # a selection's size is not known upfront


def test_restore_warnings_end_succeeded_with_errors(
    ctx: JobContext, server: FakeServer, src: Path, snapshot_id: str, tmp_path: Path
) -> None:
    target = tmp_path / "restore"
    blocker = target / src.relative_to("/") / "a.txt"
    blocker.mkdir(parents=True)  # a directory where the snapshot has a file
    assert execute_job(ctx, restore_job("r-1", snapshot_id, str(target))) == "succeeded_with_errors"
    assert f"{blocker}: a directory exists where the snapshot has a file; skipped" in log_messages(
        server, "r-1"
    )
    done = final(server, "r-1")
    assert done.result is not None and done.result.summary["warnings"] == 1


@pytest.mark.parametrize(
    ("target", "paths", "error"),
    [
        ("relative/target", [], "restore target 'relative/target' must be an absolute path"),
        ("/tmp/../etc", [], "restore target '/tmp/../etc' must not contain '..'"),
        (
            "/tmp/restore",
            ["/srv/../etc/shadow"],
            "restore path '/srv/../etc/shadow' must not contain '..'",
        ),
    ],
)
def test_restore_refuses_unsafe_parameters(
    ctx: JobContext, server: FakeServer, target: str, paths: list[str], error: str
) -> None:
    assert execute_job(ctx, restore_job("r-1", "latest", target, paths=paths)) == "failed"
    assert final(server, "r-1").error == error
    assert ("GET", "/repository") not in server.requests


def test_restore_of_an_unknown_snapshot_fails_with_the_reason(
    ctx: JobContext, server: FakeServer, snapshot_id: str, tmp_path: Path
) -> None:
    job = restore_job("r-1", "ffffffff", str(tmp_path / "restore"))
    assert execute_job(ctx, job) == "failed"
    assert final(server, "r-1").error == (
        "no snapshot matches 'ffffffff'; list them with `roost snapshots`"
    )


def test_restore_conflict_policy_is_applied(
    ctx: JobContext, server: FakeServer, src: Path, snapshot_id: str, tmp_path: Path
) -> None:
    target = tmp_path / "restore"
    existing = target / src.relative_to("/") / "a.txt"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"local edit")
    job = restore_job("r-1", snapshot_id, str(target), conflict="skip")
    assert execute_job(ctx, job) == "succeeded"
    assert existing.read_bytes() == b"local edit"
    done = final(server, "r-1")
    assert done.result is not None and done.result.summary["skipped"] == 1

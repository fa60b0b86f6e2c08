"""What the agent and the server say to each other.

All agent routes live under ``/api/v1/agent`` and, except enrollment, carry
``Authorization: Bearer <agent id>.<agent secret>``. The agent always connects out; the
long-poll (``POST /poll``) is both the heartbeat and the job channel.

Job states (one state machine, owned by the server)::

    queued -> dispatched -> running -> succeeded | succeeded_with_errors | failed
                                       | aborted | cancelled
    queued -> skipped            (decided by the scheduler, with a reason)
    queued | dispatched -> cancelled

Routes:
    POST   /enroll                      EnrollRequest -> EnrollResponse (no auth; one-time token)
    POST   /poll                        PollRequest -> PollResponse (waits up to wait_seconds)
    GET    /repository                  -> RepositoryKeyResponse (key material, memory only)
    POST   /jobs/{job_id}/events        JobEvent -> JobEventResponse (cancel flag)
    GET    /storage?prefix=P            -> list[StorageObject]
    HEAD   /storage/{key}               -> 200 with Content-Length, or 404
    GET    /storage/{key}               -> bytes (honours a "Range: bytes=a-b" header)
    PUT    /storage/{key}               body = bytes; 201, or 412 if it exists; header
                                        "X-Roost-Overwrite: 1" allowed for leases/ only
    DELETE /storage/{key}               leases/ only; 204 or 404
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JobState = Literal[
    "queued",
    "dispatched",
    "running",
    "succeeded",
    "succeeded_with_errors",
    "failed",
    "aborted",
    "cancelled",
    "skipped",
]
FINAL_STATES: frozenset[str] = frozenset(
    {"succeeded", "succeeded_with_errors", "failed", "aborted", "cancelled", "skipped"}
)
ACTIVE_STATES: frozenset[str] = frozenset({"dispatched", "running"})


class Strict(BaseModel):
    """Unknown fields are an error: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class EnrollRequest(Strict):
    token: str = Field(min_length=8, max_length=200)
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    hostname: str = Field(max_length=255)
    os: str = Field(max_length=100)
    version: str = Field(max_length=50)


class EnrollResponse(Strict):
    agent_id: str
    secret: str
    organisation: str


class PollRequest(Strict):
    boot_id: str = Field(max_length=100)
    hostname: str = Field(max_length=255)
    os: str = Field(max_length=100)
    version: str = Field(max_length=50)
    running_jobs: list[str] = Field(default_factory=list, max_length=100)
    wait_seconds: float = Field(default=25.0, ge=0, le=60)


class RestoreParams(Strict):
    snapshot_id: str
    paths: list[str] = Field(default_factory=list)
    target: str
    conflict: Literal["overwrite", "skip", "rename", "if-newer"] = "overwrite"


class JobAssignment(Strict):
    id: str
    kind: Literal["backup", "restore"]
    set_id: str
    set_name: str
    paths: list[str] = Field(default_factory=list)
    excludes: list[str] = Field(default_factory=list)
    snapshot_mode: Literal["auto", "never"] = "auto"
    level: Literal["full", "incremental"] = "full"
    parent_snapshot: str | None = None
    force_read: list[str] = Field(default_factory=list)
    bandwidth_limit: int | None = None  # bytes per second, None = unlimited
    tags: list[str] = Field(default_factory=list)
    restore: RestoreParams | None = None


class PollResponse(Strict):
    jobs: list[JobAssignment] = Field(default_factory=list)
    server_time: str


class RepositoryKeyResponse(Strict):
    master_key: dict[str, object]
    config: dict[str, object]


class Estimate(Strict):
    files: int = Field(ge=0)
    bytes: int = Field(ge=0)
    seconds: float | None = Field(default=None, ge=0)


class Progress(Strict):
    files_done: int = Field(ge=0)
    bytes_done: int = Field(ge=0)
    rate: float = Field(default=0.0, ge=0)  # bytes per second
    eta_seconds: float | None = Field(default=None, ge=0)


class LogLine(Strict):
    at: str
    level: Literal["info", "warning", "error"] = "info"
    message: str = Field(max_length=4000)


class MissedFile(Strict):
    path: str = Field(max_length=4096)
    reason: str = Field(max_length=500)


class JobResult(Strict):
    snapshot_id: str | None = None
    summary: dict[str, object] = Field(default_factory=dict)


class JobEvent(Strict):
    state: (
        Literal["running", "succeeded", "succeeded_with_errors", "failed", "aborted", "cancelled"]
        | None
    ) = None
    estimate: Estimate | None = None
    progress: Progress | None = None
    log: list[LogLine] = Field(default_factory=list, max_length=1000)
    missed: list[MissedFile] = Field(default_factory=list, max_length=10000)
    result: JobResult | None = None
    error: str | None = Field(default=None, max_length=4000)


class JobEventResponse(Strict):
    cancel: bool = False
    cancel_reason: str | None = None


class StorageObject(Strict):
    key: str
    size: int

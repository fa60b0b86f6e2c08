"""Admin API bodies, split by role: ``XCreate`` comes in (unknown fields refused), ``XPublic``
goes out. Agent bodies are in roost.protocol.agent_api."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from roost.server.scheduler.policy import Schedule, Window

_ABSOLUTE = re.compile(r"^(/|[A-Za-z]:[\\/]|\\\\)")


def _absolute(path: str) -> str:
    if not _ABSOLUTE.match(path):
        raise ValueError(f"{path!r} is not an absolute path (such as /srv/share or D:\\Shares)")
    return path


class Strict(BaseModel):
    """Unknown fields are an error: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
AbsolutePath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_absolute)]
Count = Annotated[int, Field(ge=0, le=100_000)]


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class LoginResponse(BaseModel):
    token: str
    expires_at: datetime


class TokenCreate(Strict):
    expires_in: int = Field(default=86400, ge=60, le=365 * 86400)
    uses: int = Field(default=1, ge=1, le=10_000)
    note: str = Field(default="", max_length=200)


class TokenCreated(BaseModel):
    id: str
    token: str
    expires_at: datetime
    uses_left: int


class TokenPublic(BaseModel):
    id: str
    expires_at: datetime
    uses_left: int
    revoked: bool
    created_at: datetime
    note: str


class AgentPublic(BaseModel):
    id: str
    name: str
    hostname: str
    os: str
    version: str
    state: Literal["online", "offline", "disabled"]
    last_seen: datetime | None
    boot_id: str | None


class PolicyCreate(Strict):
    name: Name
    schedule: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    window: str | None = Field(default=None, max_length=50)
    bandwidth_limit: int | None = Field(default=None, ge=1024)  # bytes per second
    retries: int = Field(default=0, ge=0, le=10)
    retry_interval: int = Field(default=600, ge=10, le=86400)  # seconds
    catch_up_seconds: int = Field(default=43200, ge=0, le=7 * 86400)
    keep_last: Count = 0
    keep_hourly: Count = 0
    keep_daily: Count = 0
    keep_weekly: Count = 0
    keep_monthly: Count = 0
    keep_yearly: Count = 0

    @model_validator(mode="after")
    def _calendar(self) -> PolicyCreate:
        schedule = Schedule.parse(self.schedule, self.timezone)  # ValueError says what to write
        if self.window is not None:
            Window.parse(self.window, self.timezone, schedule)
        return self


class PolicyPublic(BaseModel):
    id: str
    name: str
    schedule: str
    timezone: str
    window: str | None
    bandwidth_limit: int | None
    retries: int
    retry_interval: int
    catch_up_seconds: int
    keep_last: int
    keep_hourly: int
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    keep_yearly: int
    next_run: datetime | None


class SetCreate(Strict):
    name: Name
    agent: str = Field(min_length=1, max_length=100)
    paths: list[AbsolutePath] = Field(min_length=1, max_length=100)
    excludes: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=list, max_length=1000
    )
    policy: str | None = Field(default=None, max_length=100)
    snapshot_mode: Literal["auto", "never"] = "auto"


class JobBrief(BaseModel):
    id: str
    state: str
    trigger: str
    reason: str | None
    created_at: datetime
    finished_at: datetime | None


class SetPublic(BaseModel):
    id: str
    name: str
    agent: str
    paths: list[str]
    excludes: list[str]
    policy: str | None
    snapshot_mode: str
    enabled: bool
    created_at: datetime
    last_job: JobBrief | None
    next_run: datetime | None


class EstimatePublic(BaseModel):
    files: int | None
    bytes: int | None
    seconds: float | None


class ProgressPublic(BaseModel):
    files: int
    bytes: int
    rate: float
    eta_seconds: float | None


class LogLinePublic(BaseModel):
    at: datetime
    level: str
    message: str


class JobPublic(BaseModel):
    id: str
    kind: str
    state: str
    trigger: str
    level: str | None
    level_reason: str | None
    reason: str | None
    set: str
    agent: str
    scheduled_for: datetime | None
    attempt: int
    created_by: str | None
    cancel_requested: bool
    estimate: EstimatePublic
    estimate_accuracy: dict[str, Any] | None
    progress: ProgressPublic
    snapshot_id: str | None
    summary: dict[str, Any]
    params: dict[str, Any]
    created_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    log: list[LogLinePublic] = Field(default_factory=list)


class MissedFilePublic(BaseModel):
    path: str
    reason: str


class SnapshotPublic(BaseModel):
    id: str
    short_id: str
    time: datetime
    paths: list[str]
    summary: dict[str, Any]


class EntryPublic(BaseModel):
    name: str
    path: str
    type: str
    size: int
    mode: int
    mtime: datetime


class RestoreCreate(Strict):
    set: str = Field(min_length=1, max_length=100)
    snapshot: str = Field(default="latest", min_length=1, max_length=64)
    before: AwareDatetime | None = None  # latest snapshot at or before this time
    paths: list[AbsolutePath] = Field(default_factory=list, max_length=1000)
    agent: str | None = Field(default=None, max_length=100)
    target: AbsolutePath
    conflict: Literal["overwrite", "skip", "rename", "if-newer"] = "overwrite"


class RecoveryKeyPublic(BaseModel):
    recovery_key: str

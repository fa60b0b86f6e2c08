"""The catalog: what the control plane knows (see docs/control-plane.md, "Catalog").

Every row belongs to an organisation. Times are aware UTC datetimes (see types.py). The
migration in migrations/versions/ must match these models; a test compares them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from roost.server.catalog.types import UtcDateTime, new_id

ID = String(32)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


def _id() -> Mapped[str]:
    return mapped_column(ID, primary_key=True, default=new_id)


def _org() -> Mapped[str]:
    return mapped_column(ID, ForeignKey("organisations.id", ondelete="CASCADE"), index=True)


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime]
    repo_passphrase_wrapped: Mapped[str] = mapped_column(Text)
    recovery_key_wrapped: Mapped[str] = mapped_column(Text)
    last_maintenance_at: Mapped[datetime | None]


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = _id()
    org_id: Mapped[str] = _org()
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # admin | operator | viewer
    created_at: Mapped[datetime]


class UserSession(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[str] = _id()
    org_id: Mapped[str] = _org()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    uses_left: Mapped[int] = mapped_column(Integer)
    revoked: Mapped[bool] = mapped_column(default=False)


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = _id()
    org_id: Mapped[str] = _org()
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(64))
    hostname: Mapped[str] = mapped_column(String(255), default="")
    os: Mapped[str] = mapped_column(String(100), default="")
    version: Mapped[str] = mapped_column(String(50), default="")
    boot_id: Mapped[str | None] = mapped_column(String(100))
    last_seen: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = _id()
    org_id: Mapped[str] = _org()
    name: Mapped[str] = mapped_column(String(100))
    schedule: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    window: Mapped[str | None] = mapped_column(String(50))
    bandwidth_limit: Mapped[int | None] = mapped_column(BigInteger)
    retries: Mapped[int] = mapped_column(default=0)
    retry_interval: Mapped[int] = mapped_column(default=600)  # seconds
    catch_up_seconds: Mapped[int] = mapped_column(default=43200)
    keep_last: Mapped[int] = mapped_column(default=0)
    keep_hourly: Mapped[int] = mapped_column(default=0)
    keep_daily: Mapped[int] = mapped_column(default=0)
    keep_weekly: Mapped[int] = mapped_column(default=0)
    keep_monthly: Mapped[int] = mapped_column(default=0)
    keep_yearly: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]


class BackupSet(Base):
    __tablename__ = "backup_sets"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = _id()
    org_id: Mapped[str] = _org()
    name: Mapped[str] = mapped_column(String(100))
    agent_id: Mapped[str] = mapped_column(ID, ForeignKey("agents.id"), index=True)
    policy_id: Mapped[str | None] = mapped_column(ID, ForeignKey("policies.id"), index=True)
    paths: Mapped[list[str]]
    excludes: Mapped[list[str]]
    snapshot_mode: Mapped[str] = mapped_column(String(10), default="auto")
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    # The scheduler has created (or skipped) every slot up to here; shared by all replicas.
    last_planned_at: Mapped[datetime | None]


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # One job per schedule slot and attempt, whichever replica's scheduler gets there first.
        UniqueConstraint("set_id", "scheduled_for", "attempt", name="uq_jobs_slot"),
        Index("ix_jobs_agent_state", "agent_id", "state"),
        Index("ix_jobs_set_created", "set_id", "created_at"),
        Index("ix_jobs_state", "state"),
    )

    id: Mapped[str] = _id()
    org_id: Mapped[str] = _org()
    set_id: Mapped[str] = mapped_column(ID, ForeignKey("backup_sets.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ID, ForeignKey("agents.id"))
    kind: Mapped[str] = mapped_column(String(10))  # backup | restore
    trigger: Mapped[str] = mapped_column(String(10))  # now | schedule | retry
    state: Mapped[str] = mapped_column(String(30))
    level: Mapped[str | None] = mapped_column(String(20))
    level_reason: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    scheduled_for: Mapped[datetime | None]
    attempt: Mapped[int] = mapped_column(default=1)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    dispatched_at: Mapped[datetime | None]
    dispatch_boot_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    estimate_files: Mapped[int | None]
    estimate_bytes: Mapped[int | None] = mapped_column(BigInteger)
    estimate_seconds: Mapped[float | None]
    estimate_accuracy: Mapped[dict[str, Any] | None]
    progress_files: Mapped[int] = mapped_column(default=0)
    progress_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_rate: Mapped[float] = mapped_column(default=0.0)
    progress_eta: Mapped[float | None]
    snapshot_id: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cancel_requested: Mapped[bool] = mapped_column(default=False)


class JobLog(Base):
    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ID, ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    level: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)


class MissedFileRow(Base):
    __tablename__ = "missed_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ID, ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(500))


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = _org()
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(150))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

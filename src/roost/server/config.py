"""Server settings: one typed object, read from arguments and ROOST_* environment variables."""

from __future__ import annotations

import ipaddress
from datetime import time
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8443


class ServerSettings(BaseSettings):
    """Everything `roost server` can be told; paths default to files under ``home``."""

    model_config = SettingsConfigDict(env_prefix="ROOST_", extra="forbid")

    home: Path = Path("roost-data")
    db_url: str | None = None  # default: sqlite:///<home>/catalog.db
    storage_url: str | None = None  # default: <home>/storage
    bind: str = f"127.0.0.1:{DEFAULT_PORT}"
    tls_cert: Path | None = None  # default: <home>/tls/cert.pem (self-signed on first start)
    tls_key: Path | None = None
    insecure_http: bool = False
    offline_after_seconds: float = 90.0
    poll_wait_seconds: float = 25.0
    poll_recheck_seconds: float = (
        1.0  # how often a waiting poll looks for jobs other replicas queued
    )
    scheduler_enabled: bool = True
    scheduler_interval_seconds: float = 10.0
    maintenance_time: str = "03:00"
    maintenance_timezone: str = "UTC"
    session_hours: float = 12.0
    max_upload_bytes: int = 64 * 1024 * 1024

    @field_validator("maintenance_time")
    @classmethod
    def _check_time(cls, value: str) -> str:
        try:
            time.fromisoformat(value)
        except ValueError:
            raise ValueError(f"maintenance_time {value!r} is not a time such as 03:00") from None
        return value

    @property
    def maintenance_at(self) -> time:
        return time.fromisoformat(self.maintenance_time)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def storage_location(self) -> str:
        return self.storage_url or str(self.home / "storage")

    @property
    def cert_path(self) -> Path:
        return self.tls_cert or self.home / "tls" / "cert.pem"

    @property
    def key_path(self) -> Path:
        return self.tls_key or self.home / "tls" / "key.pem"

    @property
    def host_port(self) -> tuple[str, int]:
        """``bind`` split into host and port; ``[::1]:8443`` and ``:8443`` are accepted."""
        host, _, port = self.bind.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"invalid --bind {self.bind!r}: expected HOST:PORT such as 0.0.0.0:8443"
            )
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def bind_is_loopback(self) -> bool:
        host = self.host_port[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

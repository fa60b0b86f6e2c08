"""The live "provider": read the files where they are (the reference's Linux behaviour).

It exists so callers that want a provider object for every mode have one; the fallback in
``prepare_snapshot`` builds the same result directly. Locked or changing files become missed
files in the scan, not errors here.
"""

from __future__ import annotations

from roost.agent.snapshots.base import LIVE, PreparedSnapshot, live_snapshot


class LiveProvider:
    """Always applicable; nothing to create, validate or delete."""

    name = LIVE

    def unsupported_reason(self, paths: list[str]) -> str | None:
        return None

    def applicable(self, paths: list[str]) -> bool:
        return True

    def create(self, paths: list[str], job_id: str) -> PreparedSnapshot:
        return live_snapshot(paths, ["live scan: files are read where they are"])

    def validate(self, snap: PreparedSnapshot) -> None:
        return None

    def delete(self, snap: PreparedSnapshot) -> None:
        return None

    def cleanup_leftovers(self) -> list[str]:
        return []

"""A backup walk's settings, and what it counts: the summary's tallies and missed files."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from roost.engine.filters import ExcludeRules
from roost.engine.progress import BackupProgress


@dataclass(frozen=True)
class WalkSettings:
    rules: ExcludeRules
    read_xattrs: bool
    force_read: frozenset[bytes]


class Counters:
    """Thread-safe tallies shared by the walker and the reader threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {}
        self.missed: list[dict[str, str]] = []

    def add(self, **amounts: int) -> None:
        with self._lock:
            for key, amount in amounts.items():
                self.values[key] = self.values.get(key, 0) + amount

    def miss(self, path: bytes, reason: str, progress: BackupProgress) -> None:
        with self._lock:
            self.values["files_missed"] = self.values.get("files_missed", 0) + 1
            self.missed.append({"path": os.fsdecode(path), "reason": reason})
        progress.missed(path, reason)


def count(tally: dict[str, int], bytes_total: int, **amounts: int) -> None:
    tally["bytes_total"] = tally.get("bytes_total", 0) + bytes_total
    for key, amount in amounts.items():
        tally[key] = tally.get(key, 0) + amount


__all__ = ["Counters", "WalkSettings", "count"]

"""Measured backup throughput, so a job can estimate its duration before it starts.

After each backup the agent records how fast it got through the data (bytes considered,
unchanged ones included, per second of archiving) as an exponential moving average, per backup
set and level and per level alone: an incremental backup that reuses most files is far faster
than a full one, and one set (a NAS mount) may be slower than another (a local disk). The
estimate uses the most specific average that exists, and none at all without history.

``throughput.json`` in the agent home (version 1)::

    {"version": 1, "rates": {"set:<set id>:full": 52428800.0, "level:full": 48000000.0}}
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("roost.agent")

HISTORY_NAME = "throughput.json"
ALPHA = 0.3  # weight of the newest measurement: adapts in a few jobs, ignores one outlier
MIN_SECONDS = 0.5  # shorter runs measure start-up cost, not throughput


def history_keys(set_id: str, level: str) -> list[str]:
    """Most specific first."""
    return [f"set:{set_id}:{level}", f"level:{level}"]


class ThroughputHistory:
    def __init__(self, path: Path, alpha: float = ALPHA) -> None:
        self.path = path
        self.alpha = alpha
        self._lock = threading.Lock()

    def rate(self, keys: list[str]) -> float | None:
        rates = self._load()
        return next((rates[key] for key in keys if key in rates), None)

    def estimate_seconds(self, size: int, keys: list[str]) -> float | None:
        rate = self.rate(keys)
        return None if rate is None or rate <= 0 else size / rate

    def record(self, size: int, seconds: float, keys: list[str]) -> None:
        if size <= 0 or seconds < MIN_SECONDS:
            return
        measured = size / seconds
        with self._lock:
            rates = self._load()
            for key in keys:
                old = rates.get(key)
                rates[key] = measured if old is None else old + self.alpha * (measured - old)
            self._store(rates)

    def _load(self) -> dict[str, float]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(k): float(v) for k, v in doc.get("rates", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}  # no or damaged history only costs the estimate, never the backup

    def _store(self, rates: dict[str, float]) -> None:
        tmp = self.path.with_name(f".tmp-{self.path.name}")
        try:
            tmp.write_text(json.dumps({"version": 1, "rates": rates}, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only home costs future estimates, not this backup
            log.warning("cannot save throughput history %s: %s", self.path, exc)

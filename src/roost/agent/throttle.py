"""A token bucket that holds uploads to a bandwidth limit (a backup policy setting).

The bucket holds up to ``burst`` bytes of credit and refills at ``bytes_per_second``. Taking
more than is available is allowed and leaves the bucket in debt; the caller then sleeps until
the debt is repaid. So one big request is never refused, and the long-run rate is exact.
Several upload threads share one limiter: each takes its bytes under the lock and sleeps
outside it, so later takers see the larger debt and wait correspondingly longer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CHUNK = 64 * 1024  # upload bodies are released in pieces this big: the link is never flooded


class RateLimiter:
    def __init__(
        self,
        bytes_per_second: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        self.rate = float(bytes_per_second)
        self.burst = float(burst if burst is not None else max(bytes_per_second / 4, CHUNK))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._last = clock()

    def acquire(self, count: int) -> float:
        """Take ``count`` bytes of credit, sleeping while in debt; return the seconds slept."""
        if count <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= count
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

"""RateLimiter: exact sleeps for a given clock, burst cap, debt, sharing, pacing."""

from __future__ import annotations

import pytest

from roost.agent.throttle import RateLimiter


class FakeTime:
    """A clock that only moves when told to, or when someone sleeps (if ``sleep_advances``)."""

    def __init__(self, sleep_advances: bool = True) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.sleep_advances = sleep_advances

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.sleep_advances:
            self.now += seconds


def limiter(t: FakeTime, rate: float = 100, burst: float = 50) -> RateLimiter:
    return RateLimiter(rate, burst=burst, clock=t.clock, sleep=t.sleep)


def test_credit_up_to_the_burst_is_free() -> None:
    t = FakeTime()
    bucket = limiter(t)
    assert bucket.acquire(20) == 0.0
    assert bucket.acquire(30) == 0.0
    assert t.sleeps == []


def test_debt_is_slept_off_at_the_rate() -> None:
    t = FakeTime()
    bucket = limiter(t)
    bucket.acquire(50)  # bucket empty
    assert bucket.acquire(100) == pytest.approx(1.0)
    assert t.sleeps == [pytest.approx(1.0)]


def test_refill_follows_the_clock() -> None:
    t = FakeTime()
    bucket = limiter(t)
    bucket.acquire(50)
    t.now += 0.25  # 25 bytes of credit
    assert bucket.acquire(25) == 0.0
    assert bucket.acquire(10) == pytest.approx(0.1)


def test_idle_time_earns_at_most_the_burst() -> None:
    t = FakeTime()
    bucket = limiter(t)
    t.now += 1000.0
    assert bucket.acquire(150) == pytest.approx(1.0)  # 50 from the burst, 100 owed


def test_long_run_rate_is_exact() -> None:
    t = FakeTime()
    bucket = limiter(t)
    start = t.now
    for _ in range(10):
        bucket.acquire(100)
    # 1000 bytes at 100 B/s, minus the 50-byte burst available at the start
    assert t.now - start == pytest.approx(9.5)


def test_callers_sharing_a_limiter_queue_behind_each_other() -> None:
    t = FakeTime(sleep_advances=False)  # two threads taking credit at the same instant
    bucket = limiter(t)
    bucket.acquire(50)
    assert bucket.acquire(100) == pytest.approx(1.0)
    assert bucket.acquire(100) == pytest.approx(2.0)


def test_default_burst_is_a_quarter_second_but_at_least_one_piece() -> None:
    assert RateLimiter(4_000_000).burst == 1_000_000
    assert RateLimiter(1000).burst == 64 * 1024


@pytest.mark.parametrize("count", [0, -5])
def test_nothing_to_send_costs_nothing(count: int) -> None:
    t = FakeTime()
    assert limiter(t).acquire(count) == 0.0
    assert t.sleeps == []


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="bytes_per_second must be positive"):
        RateLimiter(rate)

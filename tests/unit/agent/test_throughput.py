"""ThroughputHistory: the moving average behind duration estimates."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.agent.throughput import ThroughputHistory, history_keys


def test_no_history_no_estimate(tmp_path: Path) -> None:
    assert ThroughputHistory(tmp_path / "t.json").estimate_seconds(1000, ["level:full"]) is None


def test_moving_average_and_most_specific_key(tmp_path: Path) -> None:
    history = ThroughputHistory(tmp_path / "t.json", alpha=0.5)
    history.record(1000, 1.0, history_keys("s1", "full"))  # 1000 B/s
    history.record(3000, 1.0, history_keys("s1", "full"))  # 3000 B/s -> average 2000
    history.record(8000, 1.0, history_keys("s2", "full"))  # level average -> 5000
    assert history.rate(history_keys("s1", "full")) == 2000.0
    assert history.rate(history_keys("s3", "full")) == 5000.0  # unknown set: the level's
    assert history.rate(history_keys("s1", "incremental")) is None
    assert history.estimate_seconds(10_000, history_keys("s1", "full")) == 5.0


def test_survives_a_restart_and_ignores_short_runs(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    ThroughputHistory(path).record(500, 2.0, ["k"])
    ThroughputHistory(path).record(10**9, 0.1, ["k"])  # start-up cost, not throughput
    assert ThroughputHistory(path).rate(["k"]) == 250.0


@pytest.mark.parametrize("content", ["not json", '{"rates": {"k": "fast"}}', "[]"])
def test_damaged_history_only_loses_the_estimate(tmp_path: Path, content: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(content)
    history = ThroughputHistory(path)
    assert history.rate(["k"]) is None
    history.record(100, 1.0, ["k"])
    assert history.rate(["k"]) == 100.0


def test_unwritable_history_does_not_raise(tmp_path: Path) -> None:
    history = ThroughputHistory(tmp_path / "missing-dir" / "t.json")
    history.record(100, 1.0, ["k"])  # the directory does not exist: logged, not raised
    assert history.rate(["k"]) is None

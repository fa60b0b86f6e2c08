"""The benchmark's pure logic for the roost-agent tool (bench/agentpath.py, bench/report.py)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))  # the benchmark's modules import each other by plain name

import agentpath  # noqa: E402
import report  # noqa: E402
from measure import Measurement, ToolRun  # noqa: E402

BANNER = """\
Roost server listening on https://127.0.0.1:40123/
TLS certificate fingerprint (SHA-256): {fp}
INFO:     Uvicorn running on https://127.0.0.1:40123
"""
FP = ":".join(["AB"] * 32)


def test_banner_gives_url_and_fingerprint() -> None:
    assert agentpath.parse_banner(BANNER.format(fp=FP)) == ("https://127.0.0.1:40123", FP)


def test_banner_before_the_server_printed_it() -> None:
    assert agentpath.parse_banner("starting...\n") is None


def test_banner_over_plain_http_has_no_fingerprint() -> None:
    text = "Roost server listening on http://127.0.0.1:8443/\n"
    assert agentpath.parse_banner(text) == ("http://127.0.0.1:8443", None)


def test_stat_cpu_counts_reaped_children_and_odd_names() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime ...
    line = "42 (roost (agent) x) S 1 42 42 0 -1 4194560 10 0 0 0 150 30 200 12 20 0 5 0"
    assert agentpath.stat_cpu_ticks(line) == (350, 42)


def test_stat_cpu_of_this_process_is_readable() -> None:
    with open(f"/proc/{os.getpid()}/stat") as handle:
        user, system = agentpath.stat_cpu_ticks(handle.read())
    assert user >= 0 and system >= 0


def test_cpu_reading_difference_is_never_negative() -> None:
    later = agentpath.CpuReading(2.5, 1.0)
    earlier = agentpath.CpuReading(1.0, 1.25)
    assert later - earlier == agentpath.CpuReading(1.5, 0.0)


def test_tree_cpu_of_this_process_grows() -> None:
    before = agentpath.tree_cpu(os.getpid())
    sum(i * i for i in range(2_000_000))
    used = agentpath.tree_cpu(os.getpid()) - before
    assert used.user_seconds + used.sys_seconds > 0


def _step(wall: float, parts: dict[str, dict[str, float]] | None = None) -> Measurement:
    return Measurement(
        argv=["x"],
        returncode=0,
        wall_seconds=wall,
        user_seconds=1.0,
        sys_seconds=0.5,
        peak_rss_bytes=100 * 2**20,
        maxrss_wait4_bytes=0,
        rss_tree_sampled_bytes=0,
        stdout_tail="",
        stderr_tail="",
        parts=parts or {},
    )


def _run(tool: str, full: float, parts: dict[str, dict[str, float]] | None = None) -> ToolRun:
    run = ToolRun(tool=tool, dataset="source", run=1)
    run.steps["full_backup"] = _step(full, parts)
    return run


PARTS = {
    "command": {"user_seconds": 0.2, "sys_seconds": 0.0, "peak_rss_bytes": 30 * 2**20},
    "agent": {"user_seconds": 9.0, "sys_seconds": 1.0, "peak_rss_bytes": 200 * 2**20},
    "server": {"user_seconds": 3.0, "sys_seconds": 2.0, "peak_rss_bytes": 150 * 2**20},
}


@pytest.mark.parametrize(
    ("agent_seconds", "verdict"), [(12.0, "PASS"), (13.0, "PASS"), (13.5, "FAIL")]
)
def test_agent_target_is_1_3_times_the_cli(agent_seconds: float, verdict: str) -> None:
    runs = [_run("roost", 10.0), _run("roost-agent", agent_seconds, PARTS)]
    values = report.medians(runs, {"source": 10**9})["source"]
    checks = report.check_targets("source", values, {}, ["roost", "roost-agent"])
    assert f"agent <= 1.3 x roost: {verdict}" in checks["full_backup_s"]


def test_agent_target_left_out_without_the_agent_tool() -> None:
    values = report.medians([_run("roost", 10.0)], {"source": 10**9})["source"]
    checks = report.check_targets("source", values, {}, ["roost", "restic"])
    assert not any("agent" in text for text in checks["full_backup_s"])


def test_agent_target_without_the_cli_is_not_applicable() -> None:
    values = report.medians([_run("roost-agent", 12.0, PARTS)], {"source": 10**9})["source"]
    checks = report.check_targets("source", values, {}, ["roost-agent"])
    assert "agent <= 1.3 x roost: n/a (no roost figure)" in checks["full_backup_s"]


def test_agent_parts_become_figures() -> None:
    figures = report.figures_of(_run("roost-agent", 12.0, PARTS), 10**9)
    assert figures["full_backup_cpu_agent_s"] == 10.0
    assert figures["full_backup_cpu_server_s"] == 5.0
    assert figures["rss_server_bytes"] == 150 * 2**20


def test_table_has_the_agent_ratio_column_and_hides_empty_optional_rows() -> None:
    meta = {"tools": {"roost": {}, "roost-agent": {}}, "datasets": ["source"]}
    runs = [_run("roost", 10.0), _run("roost-agent", 12.0, PARTS)]
    text = report.table(meta, runs, {"source": 10**9})
    assert "roost-agent/roost" in text.splitlines()[0]
    full = next(line for line in text.splitlines() if "full backup  " in line)
    assert "1.20" in full and "agent <= 1.3 x roost: PASS" in full
    assert "server part" in text
    three = {"tools": {"roost": {}, "restic": {}, "borg": {}}, "datasets": ["source"]}
    plain = report.table(three, [_run("roost", 10.0)], {"source": 10**9})
    assert "server part" not in plain and "agent" not in plain


def test_ratio_columns() -> None:
    assert report.ratio_columns(["roost", "restic", "borg", "roost-agent"]) == [
        ("roost", "restic"),
        ("roost", "borg"),
        ("roost-agent", "roost"),
    ]
    assert report.ratio_columns(["roost-agent", "restic"]) == []


def test_the_header_names_the_revision_measured_and_the_cpu_pressure() -> None:
    revision = report.source_revision(Path(__file__).resolve().parents[3])
    assert revision == "unknown (not a git checkout)" or re.fullmatch(
        r"[0-9a-f]{7,}( \+changes)?", revision
    )
    assert report.source_revision(Path("/")) == "unknown (not a git checkout)"
    pressure = report.cpu_pressure()
    assert pressure == "unknown" or re.fullmatch(
        r"[0-9.]+ % \(last minute\), [0-9.]+ % \(5 minutes\)", pressure
    )

"""Figures, medians, target checks, the printed table and the JSON results file."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from measure import ToolRun

MiB = 2**20
GB = 10**9


# --- figures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    show: Callable[[float], str]
    higher_is_better: bool = False
    optional: bool = False  # a row only when some tool has the figure (roost-agent's parts)


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def _mib(value: float) -> str:
    return f"{value / MiB:,.0f} MiB" if value >= 10 * MiB else f"{value / MiB:.2f} MiB"


FIGURES = [
    Figure("full_backup_s", "full backup", _seconds),
    Figure("nochange_backup_s", "no-change incremental", _seconds),
    Figure("change_backup_s", "incremental, 1% files changed", _seconds),
    Figure("restore_s", "full restore", _seconds),
    Figure("full_backup_mib_s", "full backup throughput", lambda v: f"{v:,.1f} MiB/s", True),
    Figure("full_backup_cpu_s", "full backup CPU (user+sys)", _seconds),
    Figure("repo_full_bytes", "repository size, after full", _mib),
    Figure("repo_final_bytes", "repository size, after 3 backups", _mib),
    Figure("rss_backup_bytes", "peak RSS, backups (max of 3)", _mib),
    Figure("pss_backup_bytes", "peak PSS, backups (shared pages once)", _mib),
    Figure("rss_restore_bytes", "peak RSS, restore", _mib),
    Figure("client_cache_bytes", "client-side cache/home size", _mib),
    Figure("full_backup_cpu_agent_s", "full backup CPU, agent part", _seconds, optional=True),
    Figure("full_backup_cpu_server_s", "full backup CPU, server part", _seconds, optional=True),
    Figure("rss_server_bytes", "peak RSS, server (backups)", _mib, optional=True),
]
AGENT = "roost-agent"
BY_KEY = {figure.key: figure for figure in FIGURES}


def figures_of(run: ToolRun, dataset_bytes: int) -> dict[str, float]:
    """The table's figures for one tool run; a figure whose step failed is absent."""
    steps = {name: step for name, step in run.steps.items() if step.ok}
    out: dict[str, float] = {}
    for key, name in (
        ("full_backup_s", "full_backup"),
        ("nochange_backup_s", "nochange_backup"),
        ("change_backup_s", "change_backup"),
        ("restore_s", "restore"),
    ):
        if name in steps:
            out[key] = steps[name].wall_seconds
    if "full_backup" in steps:
        full = steps["full_backup"]
        out["full_backup_mib_s"] = dataset_bytes / MiB / max(full.wall_seconds, 1e-9)
        out["full_backup_cpu_s"] = full.user_seconds + full.sys_seconds
    backups = [
        steps[name].peak_rss_bytes
        for name in ("full_backup", "nochange_backup", "change_backup")
        if name in steps
    ]
    if backups:
        out["rss_backup_bytes"] = max(backups)
    pss = [
        steps[name].peak_pss_bytes
        for name in ("full_backup", "nochange_backup", "change_backup")
        if name in steps
    ]
    if pss and min(pss) > 0:  # results from before the figure existed have none
        out["pss_backup_bytes"] = max(pss)
    if "restore" in steps:
        out["rss_restore_bytes"] = steps["restore"].peak_rss_bytes
    full_parts = steps["full_backup"].parts if "full_backup" in steps else {}
    for part in ("agent", "server"):
        if part in full_parts:
            cpu = full_parts[part]["user_seconds"] + full_parts[part]["sys_seconds"]
            out[f"full_backup_cpu_{part}_s"] = cpu
    server_rss = [
        steps[name].parts["server"]["peak_rss_bytes"]
        for name in ("full_backup", "nochange_backup", "change_backup")
        if name in steps and "server" in steps[name].parts
    ]
    if server_rss:
        out["rss_server_bytes"] = max(server_rss)
    if run.repo_full:
        out["repo_full_bytes"] = run.repo_full.disk_bytes
    if run.repo_final:
        out["repo_final_bytes"] = run.repo_final.disk_bytes
    if run.client_cache:
        out["client_cache_bytes"] = run.client_cache.disk_bytes
    return out


Medians = dict[str, dict[str, dict[str, float]]]  # dataset -> figure -> tool -> median


def medians(runs: list[ToolRun], sizes: dict[str, int]) -> Medians:
    collected: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        for key, value in figures_of(run, sizes[run.dataset]).items():
            collected.setdefault(run.dataset, {}).setdefault(key, {}).setdefault(
                run.tool, []
            ).append(value)
    return {
        dataset: {
            key: {tool: statistics.median(values) for tool, values in per_tool.items()}
            for key, per_tool in per_figure.items()
        }
        for dataset, per_figure in collected.items()
    }


def completed(runs: list[ToolRun]) -> dict[str, dict[str, tuple[int, int]]]:
    """dataset -> tool -> (runs that completed every step and verified, runs)."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for run in runs:
        done, total = out.setdefault(run.dataset, {}).get(run.tool, (0, 0))
        ok = run.failed is None and "restore" in run.steps
        out[run.dataset][run.tool] = (done + ok, total + 1)
    return out


# --- targets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    datasets: tuple[str, ...] | None  # None: every dataset
    key: str  # a figure key, or "completed"
    text: str
    max_ratio: float | None = None  # tool <= max_ratio x baseline (time, size, RSS)
    min_ratio: float | None = None  # tool >= min_ratio x baseline (throughput)
    max_value: float | None = None  # tool < max_value (absolute)
    tool: str = "roost"
    baseline: str = "restic"


TARGETS = [
    Target(("source",), "full_backup_s", "<= 0.6 x restic", max_ratio=0.6),
    Target(("source",), "nochange_backup_s", "<= 0.5 x restic", max_ratio=0.5),
    Target(("source",), "restore_s", "<= 0.6 x restic", max_ratio=0.6),
    Target(None, "repo_full_bytes", "<= restic", max_ratio=1.0),
    Target(None, "repo_final_bytes", "<= restic", max_ratio=1.0),
    Target(None, "rss_backup_bytes", "<= restic", max_ratio=1.0),
    Target(("small",), "completed", "completes"),
    Target(("small",), "rss_backup_bytes", "< 1 GB", max_value=GB),
    Target(("small",), "rss_restore_bytes", "< 1 GB", max_value=GB),
    Target(("small",), "nochange_backup_s", "<= 0.5 x restic", max_ratio=0.5),
    Target(("large",), "full_backup_mib_s", ">= restic", min_ratio=1.0),
    # issue #4: agent -> server -> storage on loopback within 1.3 x the standalone CLI
    Target(
        None, "full_backup_s", "agent <= 1.3 x roost", max_ratio=1.3, tool=AGENT, baseline="roost"
    ),
]


def check_targets(
    dataset: str,
    values: dict[str, dict[str, float]],
    done: dict[str, tuple[int, int]],
    tools: list[str] | None = None,
) -> dict[str, list[str]]:
    """figure key -> ["<target> PASS|FAIL|n/a", ...] for this dataset.

    With ``tools`` (the tools that were run), a target of a tool that was not run is left out.
    """
    out: dict[str, list[str]] = {}
    for target in TARGETS:
        if target.datasets is not None and dataset not in target.datasets:
            continue
        if tools is not None and target.tool not in tools:
            continue
        out.setdefault(target.key, []).append(f"{target.text}: {_verdict(target, values, done)}")
    return out


def _verdict(
    target: Target, values: dict[str, dict[str, float]], done: dict[str, tuple[int, int]]
) -> str:
    if target.key == "completed":
        ok, total = done.get(target.tool, (0, 0))
        return "PASS" if total and ok == total else "FAIL"
    value = values.get(target.key, {}).get(target.tool)
    if value is None:
        return f"FAIL ({target.tool} did not finish)"
    if target.max_value is not None:
        return "PASS" if value < target.max_value else "FAIL"
    baseline = values.get(target.key, {}).get(target.baseline)
    if not baseline:
        return f"n/a (no {target.baseline} figure)"
    ratio = value / baseline
    if target.max_ratio is not None:
        return "PASS" if ratio <= target.max_ratio else "FAIL"
    assert target.min_ratio is not None
    return "PASS" if ratio >= target.min_ratio else "FAIL"


# --- machine and tool description ------------------------------------------------------------


def machine() -> dict[str, Any]:
    memory = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_bytes": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def source_revision(root: Path) -> str:
    """The commit of the Roost being measured, ``+changes`` if the tree differs from it."""
    try:
        commit = _git(root, "rev-parse", "--short", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + (" +changes" if dirty else "")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()


def cpu_pressure() -> str:
    """How much of the last minutes runnable tasks waited for a CPU (Linux PSI), if known.

    These machines are shared: a run with other guests busy is slower throughout, for every
    tool, and this says so beside the figures.
    """
    try:
        with open("/proc/pressure/cpu") as handle:
            some = handle.readline().split()
    except OSError:
        return "unknown"
    fields = dict(field.split("=", 1) for field in some[1:] if "=" in field)
    return f"{fields.get('avg60', '?')} % (last minute), {fields.get('avg300', '?')} % (5 minutes)"


def header_lines(meta: dict[str, Any]) -> list[str]:
    host = meta["machine"]
    lines = [
        f"Roost benchmark  {meta['date']}  roost {meta.get('revision', 'unknown')}",
        f"machine: {host['hostname']}, {host['cores']} cores ({host['cores_usable']} usable)"
        f" {host['cpu_model']}, {host['memory_bytes'] / 2**30:.1f} GiB RAM, "
        f"Linux {host['kernel']}, Python {host['python']}",
    ]
    for name, tool in meta["tools"].items():
        lines.append(f"{name:>6}: {tool['version']}; compression: {tool['compression']}")
    lines.append(
        f"cache: {meta['cache']}  runs: {meta['runs']}  datasets: {', '.join(meta['datasets'])}"
    )
    if "cpu_pressure" in meta:
        lines.append(f"CPU pressure at the start (tasks waiting for a CPU): {meta['cpu_pressure']}")
    return lines


def now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


# --- table and JSON ----------------------------------------------------------------------------


def table(meta: dict[str, Any], runs: list[ToolRun], sizes: dict[str, int]) -> str:
    values = medians(runs, sizes)
    done = completed(runs)
    tools = list(meta["tools"])
    head = ["dataset", "figure (median)", *tools]
    pairs = ratio_columns(tools)
    head += [f"{tool}/{other}" for tool, other in pairs]
    head.append("target")
    rows: list[list[str]] = []
    for dataset in meta["datasets"]:
        per_figure = values.get(dataset, {})
        checks = check_targets(dataset, per_figure, done.get(dataset, {}), tools)
        for figure in FIGURES:
            per_tool = per_figure.get(figure.key, {})
            if figure.optional and not per_tool:
                continue
            row = [dataset, figure.label]
            row += [figure.show(per_tool[tool]) if tool in per_tool else "-" for tool in tools]
            for tool, other in pairs:
                row.append(_ratio(per_tool.get(tool), per_tool.get(other)))
            row.append("; ".join(checks.get(figure.key, [])))
            rows.append(row)
        counts = done.get(dataset, {})
        row = [dataset, "runs completed and verified"]
        row += [f"{counts[t][0]}/{counts[t][1]}" if t in counts else "-" for t in tools]
        row += [""] * (len(head) - len(row) - 1)
        row.append("; ".join(checks.get("completed", [])))
        rows.append(row)
    return _render(head, rows)


def ratio_columns(tools: list[str]) -> list[tuple[str, str]]:
    """(tool, baseline) pairs shown as ratio columns: roost against restic and borg, and the
    agent path against the standalone roost CLI."""
    pairs: list[tuple[str, str]] = [
        ("roost", other) for other in ("restic", "borg") if "roost" in tools and other in tools
    ]
    if AGENT in tools and "roost" in tools:
        pairs.append((AGENT, "roost"))
    return pairs


def _ratio(roost: float | None, other: float | None) -> str:
    if roost is None or not other:
        return "-"
    return f"{roost / other:.2f}"


def _render(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(line[col]) for line in [head, *rows]) for col in range(len(head))]
    numeric = set(range(2, len(head) - 1))

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[col]) if col in numeric else cell.ljust(widths[col])
            for col, cell in enumerate(cells)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(head), rule, *(line(row) for row in rows)])


def results_json(
    meta: dict[str, Any], runs: list[ToolRun], sizes: dict[str, int]
) -> dict[str, Any]:
    values = medians(runs, sizes)
    done = completed(runs)
    targets = []
    for dataset in meta["datasets"]:
        for key, verdicts in check_targets(
            dataset, values.get(dataset, {}), done.get(dataset, {}), list(meta["tools"])
        ).items():
            targets += [
                {"dataset": dataset, "figure": key, "check": verdict} for verdict in verdicts
            ]
    return {
        "meta": meta,
        "figures": {figure.key: figure.label for figure in FIGURES},
        "runs": [{**run.to_json(), "figures": figures_of(run, sizes[run.dataset])} for run in runs],
        "medians": values,
        "completed": {
            ds: {tool: list(pair) for tool, pair in per.items()} for ds, per in done.items()
        },
        "targets": targets,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    temp.replace(path)

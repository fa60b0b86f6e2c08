"""Roost against restic and borg, side by side on this machine: ``make bench``.

See docs/performance.md for the method. Examples::

    python bench/run.py --quick               # smoke test, well under a minute
    python bench/run.py                       # the kernel source tree, 3 runs
    python bench/run.py --all --runs 1        # source, large and small
    python bench/run.py --datasets large --tools roost,restic
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import measure
import report
import restoretarget
from tools import TOOLS, ensure_installed

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path("/var/tmp/roost-bench")
FULL_SET = ("source", "large", "small")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark Roost against restic and borg (see docs/performance.md).",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--datasets",
        metavar="LIST",
        default="source",
        help=f"comma-separated, of {', '.join(FULL_SET)} (default: source)",
    )
    which.add_argument("--all", action="store_true", help="run source, large and small")
    which.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: a tiny generated dataset, 1 run unless --runs",
    )
    parser.add_argument(
        "--runs",
        type=int,
        metavar="N",
        help="runs per dataset and tool; medians are reported (default 3)",
    )
    parser.add_argument(
        "--tools",
        metavar="LIST",
        default=",".join(TOOLS),
        help=f"comma-separated, of {', '.join(TOOLS)} (default: all)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        default=Path(os.environ.get("ROOST_BENCH_CACHE") or DEFAULT_CACHE),
        help="datasets and scratch space, outside the repository "
        f"(default: $ROOST_BENCH_CACHE or {DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="results JSON (default: bench/results/<timestamp>.json)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.names = ["quick"]
    elif args.all:
        args.names = list(FULL_SET)
    else:
        args.names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = [name for name in args.names if name not in datasets.NAMES]
    if unknown or not args.names:
        parser.error(f"unknown dataset(s): {', '.join(unknown) or '(none)'}")
    args.tool_names = [name.strip() for name in args.tools.split(",") if name.strip()]
    if not args.tool_names or any(name not in TOOLS for name in args.tool_names):
        parser.error(f"--tools: choose among {', '.join(TOOLS)}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.cache = args.cache.expanduser().absolute()
    if args.cache.resolve().is_relative_to(REPO_ROOT):
        parser.error(f"--cache {args.cache} is inside the repository; choose a directory outside")
    return args


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    tools = [TOOLS[name] for name in args.tool_names]
    ensure_installed(
        tools, "source" in args.names, datasets.KERNEL_TARBALL, datasets.KERNEL_PACKAGE
    )
    args.cache.mkdir(parents=True, exist_ok=True)
    lock = open(args.cache / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another benchmark is using {args.cache}") from None
    datasets.recover_pending(args.cache, log)
    started = time.monotonic()
    output = args.output or (
        Path(__file__).resolve().parent
        / "results"
        / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    )
    meta: dict[str, Any] = {
        "date": report.now(),
        "machine": report.machine(),
        "tools": {
            tool.name: {
                "version": tool.version(),
                "compression": tool.compression,
                "executable": tool.executable(),
            }
            for tool in tools
        },
        "cache": str(args.cache),
        "runs": args.runs,
        "datasets": args.names,
        "dataset_info": {},
        "argv": sys.argv,
        "revision": report.source_revision(REPO_ROOT),
        "cpu_pressure": report.cpu_pressure(),
    }
    for line in report.header_lines(meta):
        print(line, flush=True)
    results: list[measure.ToolRun] = []
    sizes: dict[str, int] = {}
    work = args.cache / "work"
    try:
        for name in args.names:
            dataset = datasets.prepare(name, args.cache, log)
            entries = dataset.list_files()
            changed = datasets.choose_changed(entries, name)
            sizes[name] = dataset.bytes
            meta["dataset_info"][name] = {
                "description": dataset.description,
                "root": str(dataset.root),
                "files": len(entries),
                "bytes": dataset.bytes,
                "changed_files": len(changed),
            }
            log(
                f"dataset {name}: {len(entries):,} files, {dataset.bytes / 1e9:.2f} GB; "
                f"{len(changed):,} files change before the third backup"
            )
            for number in range(1, args.runs + 1):
                restoretarget.unmount_stale(work, log)  # never delete into a mounted image
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir()
                shift = (number - 1) % len(tools)  # rotate the order between runs
                for tool in tools[shift:] + tools[:shift]:
                    # the dataset is read once more, untimed, before each tool's first backup
                    # (measure._steps): the previous tool's restore wrote the whole dataset
                    # again, and a tool that followed borg's restore measured up to 2x slower
                    # on a partly evicted page cache
                    log(f"run {number}/{args.runs} on {name}, {tool.name}")
                    results.append(
                        measure.run_scenario(
                            tool,
                            dataset,
                            entries,
                            changed,
                            partial(datasets.changed, dataset, changed, args.cache),
                            work,
                            number,
                            log,
                        )
                    )
                    report.write_json(output, report.results_json(meta, results, sizes))
    finally:
        restoretarget.unmount_stale(work, log)
        shutil.rmtree(work, ignore_errors=True)
    print()
    for line in report.header_lines(meta):
        print(line)
    print()
    print(report.table(meta, results, sizes))
    print()
    print(f"CPU pressure at the end (the benchmark included): {report.cpu_pressure()}")
    print(f"results: {output}  ({(time.monotonic() - started) / 60:.1f} min)")
    failed = [run for run in results if run.failed]
    for run in failed:
        print(f"FAILED: {run.tool} on {run.dataset}, run {run.run}: {run.failed}")
    return 1 if failed else 0


def _interrupt(signum: int, frame: object) -> None:
    # `kill` and `timeout` stop the benchmark like Ctrl-C: the measured tool, and the server
    # and agent of roost-agent (they run in their own sessions), are stopped on the way out
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (the dataset is restored, the work directory removed)", flush=True)
        sys.exit(130)

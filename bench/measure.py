"""Measuring processes and running one tool through the benchmark scenario.

Wall time is ``perf_counter`` around the whole process (start-up included, for every tool).

Peak RSS comes from ``os.wait4``'s ``ru_maxrss`` of the tool's own process, which covers its
descendants too as far as it waited for them (Linux reports the maximum over that tree, not
the sum). Two traps, and what is done about them:

* Linux carries the RSS high-water mark of the address space a process had *before* ``exec``
  into ``ru_maxrss``. A child forked (or vforked) straight from this script would report at
  least this script's own peak RSS (hundreds of MiB with the 1,000,000-entry file list of the
  ``small`` dataset). So the tool is started through ``setsid -f``, a tiny program that forks
  it and exits; this script is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so the tool is
  re-parented to it and reaped here with ``wait4`` on the tool's own pid. The pre-``exec``
  address space is then setsid's (about 1 MiB).
* Concurrent worker processes would be reported one at a time by ``ru_maxrss``: a sampler
  thread adds up VmRSS of the tool and all its live descendants every 50 ms, and the peak RSS
  is the larger of the two figures (Roost's backup runs worker processes).

Summed VmRSS counts the pages a tool's processes share (one interpreter's code and libraries,
mapped by Roost's main process and each worker) once per process. The sampler also sums PSS,
which divides each shared page among its users: the memory the tree really occupies. Both are
reported; the target is checked against RSS.

A tool with a ``service`` (``roost-agent``: a server and an agent that run for the whole
scenario) does its work in processes that are not the measured command: for those ("watched"
processes), the CPU time of each tree is the difference of two ``/proc`` readings around the
command, and its peak RSS is sampled like the command's. The step's CPU time is then the
command's plus every watched tree's, its peak RSS that of the service's ``rss_label`` tree, and
``parts`` has each one separately.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentpath import ServiceError, children, high_water_rss, tree_cpu
from datasets import Dataset, FileEntry
from restoretarget import fresh_target, plan_image
from tools import Command, Paths, Tool, base_environment, restored_root

SAMPLE_SECONDS = 0.05
PR_SET_CHILD_SUBREAPER = 36
SETSID = shutil.which("setsid") or "/usr/bin/setsid"  # util-linux, always on Debian
TAIL = 2000  # characters of stdout/stderr kept in the results


@dataclass
class Measurement:
    argv: list[str]
    returncode: int
    wall_seconds: float
    user_seconds: float
    sys_seconds: float
    peak_rss_bytes: int  # max of the two figures below
    maxrss_wait4_bytes: int
    rss_tree_sampled_bytes: int
    stdout_tail: str
    stderr_tail: str
    # peak of the tree's summed PSS: pages shared between its processes (the interpreter
    # and libraries of Roost's workers) counted once, not once per process as by VmRSS
    peak_pss_bytes: int = 0
    # with watched processes: "command" and each watched label -> user_seconds, sys_seconds,
    # peak_rss_bytes (and high_water_rss_bytes: the process's VmHWM since it started)
    parts: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class _TreeRssSampler(threading.Thread):
    """Peak of the summed RSS of a process and its descendants, sampled from /proc
    (and of each watched process's tree, separately)."""

    def __init__(self, pid: int, watched: Mapping[str, int] | None = None) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self._watched = dict(watched or {})
        self._stop_event = threading.Event()
        self.peak = self.peak_pss = 0
        self.peaks = dict.fromkeys(self._watched, 0)
        self.pss_peaks = dict.fromkeys(self._watched, 0)
        self.lost: str | None = None  # a watched process that ended during the step

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, tree_rss(self._pid))
            self.peak_pss = max(self.peak_pss, tree_rss(self._pid, "Pss:"))
            for label, pid in self._watched.items():
                self.peaks[label] = max(self.peaks[label], tree_rss(pid))
                self.pss_peaks[label] = max(self.pss_peaks[label], tree_rss(pid, "Pss:"))
                if self.lost is None and not _running(pid):
                    self.lost = label  # the command would wait for it forever: stop it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self._pid, signal.SIGTERM)
            self._stop_event.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _rss(pid: int, field: str = "VmRSS:") -> int:
    """VmRSS (from status) or Pss (from smaps_rollup) of one process, in bytes."""
    where = "status" if field == "VmRSS:" else "smaps_rollup"
    try:
        with open(f"/proc/{pid}/{where}") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_rss(pid: int, field: str = "VmRSS:") -> int:
    """The summed VmRSS (or ``Pss:``) of a process and its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _rss(current, field)
        stack.extend(children(current))
    return total


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - TAIL))
        return handle.read().decode(errors="replace")


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _own_children() -> list[int]:
    return children(os.getpid())


def _stop(pid: int) -> None:
    """Terminate an interrupted tool (it runs in its own session, so ^C does not reach it)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if done:
            return
    os.waitpid(pid, 0)


def run_measured(
    command: Command,
    env: dict[str, str],
    logs: Path,
    label: str,
    watched: Mapping[str, int] | None = None,
    rss_label: str | None = None,
) -> Measurement:
    """Run one command to completion; stdout and stderr go to files under ``logs``.

    ``watched``: label -> pid of long-running processes that work for the command (see the
    module docstring); ``rss_label`` names the one whose tree's peak is the step's peak RSS.
    """
    watched = dict(watched or {})
    _become_subreaper()
    earlier = set(_own_children())  # e.g. a daemon some tool left behind, re-parented to us
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{label}.out", logs / f"{label}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        launcher = subprocess.Popen(
            [SETSID, "-f", *command.argv],
            cwd=command.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        if launcher.wait() != 0:
            raise RuntimeError(f"{SETSID} -f failed with exit {launcher.returncode}")
        tools = sorted(set(_own_children()) - earlier)  # the tool, re-parented to us
        if len(tools) != 1:  # (listed even if it already exited: zombies stay children)
            raise RuntimeError(f"expected one re-parented child, found {tools}")
        pid = tools[0]
        # read after the command started: its first requests are not missed (the watched
        # processes are idle until it asks them for something)
        cpu_before = {name: tree_cpu(watched_pid) for name, watched_pid in watched.items()}
        sampler = _TreeRssSampler(pid, watched)
        sampler.start()
        try:
            _, status, usage = os.wait4(pid, 0)
        except BaseException:
            _stop(pid)
            raise
        finally:
            sampler.stop()
        wall = time.perf_counter() - started
    cpu_used = {
        name: tree_cpu(watched_pid) - cpu_before[name] for name, watched_pid in watched.items()
    }
    maxrss = usage.ru_maxrss * 1024  # KiB on Linux
    peak = max(maxrss, sampler.peak)
    parts: dict[str, dict[str, float]] = {}
    if watched:
        parts["command"] = {
            "user_seconds": round(usage.ru_utime, 3),
            "sys_seconds": round(usage.ru_stime, 3),
            "peak_rss_bytes": peak,
        }
        for name, watched_pid in watched.items():
            parts[name] = {
                "user_seconds": cpu_used[name].user_seconds,
                "sys_seconds": cpu_used[name].sys_seconds,
                "peak_rss_bytes": sampler.peaks[name],
                "high_water_rss_bytes": high_water_rss(watched_pid),
            }
    # the step's CPU time: the command's, plus every watched tree's
    user = usage.ru_utime + sum(used.user_seconds for used in cpu_used.values())
    system = usage.ru_stime + sum(used.sys_seconds for used in cpu_used.values())
    return Measurement(
        argv=command.argv,
        returncode=os.waitstatus_to_exitcode(status),
        wall_seconds=round(wall, 3),
        user_seconds=round(user, 3),
        sys_seconds=round(system, 3),
        peak_rss_bytes=sampler.peaks.get(rss_label or "", peak),
        maxrss_wait4_bytes=maxrss,
        rss_tree_sampled_bytes=sampler.peak,
        stdout_tail=_tail(out_path),
        stderr_tail=_tail(err_path)
        + (
            f"\n[benchmark] the {sampler.lost} process ended during the step"
            if sampler.lost
            else ""
        ),
        parts=parts,
        peak_pss_bytes=sampler.pss_peaks.get(rss_label or "", sampler.peak_pss),
    )


# --- file system helpers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    disk_bytes: int  # what du reports: allocated blocks, hard links counted once
    apparent_bytes: int  # du --apparent-size --bytes
    files: int


def disk_usage(root: Path) -> Usage:
    disk = apparent = files = 0
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                if (info.st_dev, info.st_ino) in seen:
                    continue
                if info.st_nlink > 1:
                    seen.add((info.st_dev, info.st_ino))
                disk += info.st_blocks * 512
                apparent += info.st_size
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    files += 1
    return Usage(disk, apparent, files)


def _read_all(path: str) -> int:
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(1 << 20):
            total += len(chunk)
    return total


def warm_up(entries: list[FileEntry], root: Path) -> tuple[int, float]:
    """Read every file once (untimed), so every tool starts with the same warm page cache."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        total = sum(
            pool.map(_read_all, (str(root / entry.rel) for entry in entries), chunksize=256)
        )
    return total, time.monotonic() - started


def _same_content(left: Path, right: Path, size: int) -> bool:
    """Whole files up to 64 MiB; beyond that the first, middle and last MiB."""
    window = 1 << 20
    offsets = [0] if size <= 64 * window else [0, size // 2 - window, size - window]
    length = size if size <= 64 * window else window
    with open(left, "rb") as one, open(right, "rb") as two:
        for offset in offsets:
            one.seek(offset)
            two.seek(offset)
            if one.read(length) != two.read(length):
                return False
    return True


def verify_restore(
    entries: list[FileEntry], changed: list[FileEntry], source: Path, restored: Path
) -> str | None:
    """None if the restored tree matches the live dataset, else what differs (untimed).

    Checks the number of regular files, their total size, and the content of up to 100 files
    spread over the dataset plus up to 20 of the changed ones.
    """
    if not restored.is_dir():
        return f"{restored} does not exist"
    got = [entry for entry in _walk_files(restored)]
    want_bytes = sum(entry.size for entry in entries)
    got_bytes = sum(size for _, size in got)
    if len(got) != len(entries) or got_bytes != want_bytes:
        return (
            f"restored {len(got)} files / {got_bytes} bytes, expected {len(entries)} files / "
            f"{want_bytes} bytes"
        )
    step = max(1, len(entries) // 100)
    for entry in [*entries[::step], *changed[:20]]:
        if not _same_content(source / entry.rel, restored / entry.rel, entry.size):
            return f"content differs: {entry.rel}"
    return None


def _walk_files(root: Path) -> Iterator[tuple[str, int]]:
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path, entry.stat(follow_symlinks=False).st_size


# --- the scenario -------------------------------------------------------------------------------

STEPS = ("init", "full_backup", "nochange_backup", "change_backup", "restore")


@dataclass
class ToolRun:
    """Everything measured for one tool, one dataset, one run."""

    tool: str
    dataset: str
    run: int
    steps: dict[str, Measurement] = field(default_factory=dict)
    repo_full: Usage | None = None
    repo_final: Usage | None = None
    client_cache: Usage | None = None
    restore_check: str | None = None  # None: verified; else what went wrong
    restore_target: str | None = None  # a fresh ext4 image, or a plain directory (and why)
    failed: str | None = None  # the step that failed, with its stderr tail

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_scenario(
    tool: Tool,
    dataset: Dataset,
    entries: list[FileEntry],
    changed: list[FileEntry],
    change: Callable[[], AbstractContextManager[None]],
    work: Path,
    number: int,
    log: Callable[[str], None],
) -> ToolRun:
    """Fresh repository: full backup, no-change backup, backup after the 1 % change, restore."""
    result = ToolRun(tool=tool.name, dataset=dataset.name, run=number)
    folder = work / tool.name
    paths = Paths.under(folder)
    for path in (paths.home / "tmp", paths.restore):
        path.mkdir(parents=True)
    env = {**base_environment(paths.home), **tool.environment(paths)}
    logs = folder / "logs"
    watched: dict[str, int] = {}
    rss_label: str | None = None

    def step(name: str, command: Command) -> bool:
        os.sync()  # flush earlier writes (dataset changes, previous step) outside the timing
        measured = run_measured(command, env, logs, name, watched, rss_label)
        result.steps[name] = measured
        if measured.ok:
            log(
                f"{tool.name:>6} {name:<16} {measured.wall_seconds:9.2f} s  "
                f"{measured.user_seconds + measured.sys_seconds:8.2f} s CPU  "
                f"{measured.peak_rss_bytes / 2**20:8.0f} MiB RSS"
            )
            return True
        result.failed = f"{name}: exit {measured.returncode}: {measured.stderr_tail[-600:]}"
        log(
            f"{tool.name:>6} {name:<16} FAILED (exit {measured.returncode})\n"
            f"{measured.stderr_tail[-600:]}"
        )
        return False

    service = getattr(tool, "service", None)
    try:
        with (
            service(paths, env, folder, dataset.root) if service is not None else nullcontext()
        ) as running:
            if running is not None:
                watched.update(running.watched())
                rss_label = running.rss_label
                log(f"{tool.name:>6} {'service':<16} started: {running.describe()} (untimed)")
            _steps(result, tool, paths, dataset, entries, changed, change, step, log)
        return result
    except ServiceError as exc:  # the service did not start, or stopped working
        if result.failed is None:
            result.failed = f"service: {type(exc).__name__}: {exc}"
            log(f"{tool.name:>6} FAILED: {result.failed}")
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _steps(
    result: ToolRun,
    tool: Tool,
    paths: Paths,
    dataset: Dataset,
    entries: list[FileEntry],
    changed: list[FileEntry],
    change: Callable[[], AbstractContextManager[None]],
    step: Callable[[str, Command], bool],
    log: Callable[[str], None],
) -> None:
    """The five steps; a failed step ends the scenario (``result.failed`` says which)."""
    if not step("init", tool.init(paths)):
        return
    # Right before the first timed backup, after init and a service's start: this machine's
    # memory manager pages out page cache unused for a few seconds (see docs/performance.md),
    # and a warm-up before them left roost-agent's backup (after ~3 s of service start-up)
    # and restic's (after its ~3 s init) reading more from disk than roost's.
    total, seconds = warm_up(entries, dataset.root)
    log(f"{tool.name:>6} {'warm-up':<16} read of {total / 1e9:.2f} GB in {seconds:.1f} s (untimed)")
    if not step("full_backup", tool.backup(paths, dataset.root, 1)):
        return
    result.repo_full = disk_usage(paths.repo)
    if not step("nochange_backup", tool.backup(paths, dataset.root, 2)):
        return
    with change():
        if not step("change_backup", tool.backup(paths, dataset.root, 3)):
            return
        result.repo_final = disk_usage(paths.repo)
        result.client_cache = disk_usage(paths.home)
        # its own new file system: see restoretarget.py for why (made and removed untimed)
        with fresh_target(paths.restore, plan_image(entries), log) as target:
            result.restore_target = target
            if not step("restore", tool.restore(paths, 3)):
                return
            # the restored snapshot is the changed one: compare while the change is applied
            result.restore_check = verify_restore(
                entries, changed, dataset.root, restored_root(paths, dataset.root)
            )
    if result.restore_check:
        result.failed = f"restore check: {result.restore_check}"
        log(f"{tool.name:>6} restore check FAILED: {result.restore_check}")

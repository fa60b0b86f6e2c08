"""The tools under test, behind one small protocol so a fourth one is a new class in ``TOOLS``.

A tool says how to initialise a repository, back up a path and restore the last backup, as
command lines run non-interactively (passwords come from the environment, stdin is
/dev/null). Each tool gets its own HOME, cache and TMPDIR under the run's work directory, so
nothing leaks between tools or runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import agentpath

PASSWORD = "roost-bench-password"  # benchmark repositories only, deleted after each run
APT_PACKAGES = {"restic": "restic", "borg": "borgbackup"}


@dataclass(frozen=True)
class Command:
    argv: list[str]
    cwd: Path | None = None


@dataclass(frozen=True)
class Paths:
    """Where one tool works during one run; everything is under the run's work directory."""

    repo: Path
    home: Path  # HOME, caches, TMPDIR
    restore: Path

    @classmethod
    def under(cls, folder: Path) -> Paths:
        return cls(repo=folder / "repo", home=folder / "home", restore=folder / "restore")


class Tool(Protocol):
    name: str
    compression: str  # how the compression setting was chosen, recorded in the results

    def executable(self) -> str | None:
        """The program's path, or None when it is not installed."""

    def version(self) -> str: ...

    def environment(self, paths: Paths) -> dict[str, str]:
        """Variables added to the clean base environment (passwords, cache locations)."""

    def init(self, paths: Paths) -> Command: ...

    def backup(self, paths: Paths, source: Path, number: int) -> Command:
        """Backup number ``number`` (1, 2, 3, ...) of ``source`` into the repository."""

    def restore(self, paths: Paths, number: int) -> Command:
        """Restore backup ``number`` (the latest) into ``paths.restore`` (which exists)."""

    # Optional (see RoostAgent): ``service(paths, env, folder, source)``, a context manager
    # entered (untimed) before ``init`` and left after the restore, whose ``watched()``
    # processes are measured with every step (CPU time, peak RSS; see measure.run_measured).


def restored_root(paths: Paths, source: Path) -> Path:
    """Where ``source`` ends up inside the restore target: all three keep the absolute path."""
    return paths.restore / source.relative_to(source.anchor)


def _version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    if done.returncode != 0:
        return f"unknown (exit {done.returncode})"
    return (done.stdout or done.stderr).strip().splitlines()[0]


@dataclass
class Roost:
    name: str = "roost"
    compression: str = "zstd level 3 (Roost's default, engine/compress.py LEVEL; no option)"
    _path: str | None = field(default=None, repr=False)

    def executable(self) -> str | None:
        if self._path is None:
            beside = Path(sys.executable).parent / "roost"  # the venv running this script
            found = str(beside) if beside.exists() else shutil.which("roost")
            self._path = found
        return self._path

    def version(self) -> str:
        return _version_of([self._exe(), "--version"])

    def _exe(self) -> str:
        exe = self.executable()
        assert exe is not None
        return exe

    def environment(self, paths: Paths) -> dict[str, str]:
        return {"ROOST_REPO": str(paths.repo), "ROOST_PASSWORD": PASSWORD}

    def init(self, paths: Paths) -> Command:
        return Command([self._exe(), "init"])

    def backup(self, paths: Paths, source: Path, number: int) -> Command:
        # --json: a machine-readable summary and no progress bar (restic runs with -q)
        return Command([self._exe(), "backup", str(source), "--json"])

    def restore(self, paths: Paths, number: int) -> Command:
        return Command([self._exe(), "restore", "latest", "--target", str(paths.restore), "--json"])


@dataclass
class Restic:
    name: str = "restic"
    compression: str = (
        "--compression auto on a version 2 repository: zstd 'SpeedDefault' of "
        "klauspost/compress, documented as roughly zstd level 3"
    )

    def executable(self) -> str | None:
        return shutil.which("restic")

    def version(self) -> str:
        return _version_of(["restic", "version"])

    def environment(self, paths: Paths) -> dict[str, str]:
        return {
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_CACHE_DIR": str(paths.home / ".cache" / "restic"),
        }

    def init(self, paths: Paths) -> Command:
        return Command(["restic", "-r", str(paths.repo), "init", "--repository-version", "2"])

    def backup(self, paths: Paths, source: Path, number: int) -> Command:
        return Command(
            ["restic", "-r", str(paths.repo), "backup", "--compression", "auto", "-q", str(source)]
        )

    def restore(self, paths: Paths, number: int) -> Command:
        return Command(
            ["restic", "-r", str(paths.repo), "restore", "latest", "--target", str(paths.restore)]
        )


@dataclass
class Borg:
    name: str = "borg"
    compression: str = "--compression zstd,3 (encryption repokey-blake2)"

    def executable(self) -> str | None:
        return shutil.which("borg")

    def version(self) -> str:
        return _version_of(["borg", "--version"])

    def environment(self, paths: Paths) -> dict[str, str]:
        return {
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(paths.home),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_DISPLAY_PASSPHRASE": "no",
        }

    def init(self, paths: Paths) -> Command:
        return Command(["borg", "init", "--encryption=repokey-blake2", str(paths.repo)])

    def backup(self, paths: Paths, source: Path, number: int) -> Command:
        return Command(
            ["borg", "create", "--compression", "zstd,3", f"{paths.repo}::b{number}", str(source)]
        )

    def restore(self, paths: Paths, number: int) -> Command:
        # borg extracts into the current directory
        return Command(["borg", "extract", f"{paths.repo}::b{number}"], cwd=paths.restore)


@dataclass
class RoostAgent(Roost):
    """The managed path: agent -> server's data API -> storage, on loopback HTTPS.

    ``service`` starts (untimed) a real ``roost server`` whose storage directory is
    ``paths.repo`` and a real ``roost agent`` enrolled to it (see agentpath.py); each timed
    step is ``agentctl.py``: request the job from the server, wait until it is over.
    """

    name: str = "roost-agent"
    compression: str = "zstd level 3 (the same engine as roost, run by the agent)"

    def environment(self, paths: Paths) -> dict[str, str]:
        return {}

    def _ctl(self, paths: Paths, *args: str) -> Command:
        script = Path(__file__).resolve().parent / "agentctl.py"
        return Command([sys.executable, str(script), str(self._state(paths)), *args])

    @staticmethod
    def _state(paths: Paths) -> Path:
        return paths.home / agentpath.STATE_NAME

    def init(self, paths: Paths) -> Command:
        return self._ctl(paths, "status")  # the repository exists: the server created it

    def backup(self, paths: Paths, source: Path, number: int) -> Command:
        return self._ctl(paths, "backup")

    def restore(self, paths: Paths, number: int) -> Command:
        return self._ctl(paths, "restore", "--target", str(paths.restore))

    @contextmanager
    def service(
        self, paths: Paths, env: dict[str, str], folder: Path, source: Path
    ) -> Iterator[agentpath.AgentService]:
        with agentpath.agent_service(self._exe(), folder, paths.repo, env, source) as running:
            yield running


TOOLS: dict[str, Tool] = {tool.name: tool for tool in (Roost(), Restic(), Borg(), RoostAgent())}


def base_environment(home: Path) -> dict[str, str]:
    """The parent's environment without anything that configures a tool, HOME set to ``home``."""
    dropped = ("RESTIC_", "BORG_", "ROOST_", "XDG_", "GOMAXPROCS", "GOGC")
    env = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    tmp = home / "tmp"
    env.update({"HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    return env


def ensure_installed(
    tools: list[Tool], need_kernel_source: bool, kernel_tarball: Path, kernel_package: str
) -> None:
    """Install the missing tools (and the kernel source) with apt-get, as root, without asking."""
    missing = [
        APT_PACKAGES[tool.name]
        for tool in tools
        if tool.executable() is None and tool.name in APT_PACKAGES
    ]
    if need_kernel_source and not kernel_tarball.exists():
        missing.append(kernel_package)
    unknown = [
        tool.name for tool in tools if tool.executable() is None and tool.name not in APT_PACKAGES
    ]
    if unknown:
        raise SystemExit(f"not installed: {', '.join(unknown)} (for roost: make venv)")
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(
            f"missing packages {' '.join(missing)}: run as root, or "
            f"sudo apt-get install -y {' '.join(missing)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *missing]
    print(f"installing {' '.join(missing)} with apt-get", flush=True)
    if subprocess.run(install, env=env, stdin=subprocess.DEVNULL, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdin=subprocess.DEVNULL, check=True)
        subprocess.run(install, env=env, stdin=subprocess.DEVNULL, check=True)

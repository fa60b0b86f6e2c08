"""The thin layer between the agent and the operating system it runs on.

Everything the agent asks the OS about itself goes through :class:`Platform`: the hostname,
an OS string for the dashboard, the boot id (how the server notices a reboot during a job),
and path rules (POSIX or Windows). :func:`fake_platform` builds one for tests, so the Windows
code paths (drive letters, UNC paths, boot time) are exercised on Linux too.
"""

from __future__ import annotations

import ctypes
import ntpath
import platform as _stdlib_platform
import posixpath
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

LINUX_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_WIN_LONG_PREFIX = "\\\\?\\"
_WIN_LONG_UNC_PREFIX = "\\\\?\\UNC\\"


@dataclass(frozen=True)
class Platform:
    system: str  # platform.system(): "Linux", "Windows", "Darwin", ...
    hostname: str
    os_name: str  # shown on the dashboard, e.g. "Linux 6.1.0-18-amd64 (x86_64)"
    boot_id: Callable[[], str] = field(compare=False)

    @property
    def windows(self) -> bool:
        return self.system == "Windows"

    def is_absolute(self, path: str) -> bool:
        if self.windows:
            drive, rest = ntpath.splitdrive(path)
            return (bool(drive) and rest.startswith(("\\", "/"))) or drive.startswith("\\\\")
        return posixpath.isabs(path)

    def normalise(self, path: str) -> str:
        """One spelling per path: for Windows, no ``\\\\?\\`` prefix, backslashes, upper-case
        drive letter; for POSIX, ``normpath`` without the leading ``//`` special case."""
        if self.windows:
            return normalise_windows_path(path)
        normal = posixpath.normpath(path)
        return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def has_parent_reference(path: str) -> bool:
    """Does ``path`` contain a ``..`` component in either separator style?"""
    return ".." in path.replace("\\", "/").split("/")


def normalise_windows_path(path: str) -> str:
    """``\\\\?\\c:\\Data\\`` -> ``C:\\Data``; ``\\\\?\\UNC\\srv\\share`` -> ``\\\\srv\\share``."""
    if path.upper().startswith(_WIN_LONG_UNC_PREFIX):
        path = "\\\\" + path[len(_WIN_LONG_UNC_PREFIX) :]
    elif path.startswith(_WIN_LONG_PREFIX):
        path = path[len(_WIN_LONG_PREFIX) :]
    normal = ntpath.normpath(path.replace("/", "\\"))
    drive, rest = ntpath.splitdrive(normal)
    if len(drive) == 2 and drive[1] == ":":
        drive = drive.upper()
    return drive + rest


def windows_volume(path: str) -> str:
    """The volume a Windows path lives on: ``C:`` or ``\\\\server\\share`` (for VSS)."""
    drive, _ = ntpath.splitdrive(normalise_windows_path(path))
    return drive


# -- boot ids -------------------------------------------------------------------------------


def linux_boot_id(path: Path = LINUX_BOOT_ID) -> str:
    """The kernel's random id for this boot; it changes at every reboot."""
    return path.read_text(encoding="ascii").strip()


def boot_time_id(uptime_seconds: float, now: float) -> str:
    """A boot id from the boot time, to the minute. Computed once per process (see
    :func:`current_platform`), so rounding cannot make it flicker while the agent runs."""
    boot = datetime.fromtimestamp(now - uptime_seconds, UTC).replace(second=0, microsecond=0)
    return "boot-" + boot.strftime("%Y%m%dT%H%MZ")


def _windows_uptime() -> float:
    kernel32 = getattr(ctypes, "windll").kernel32  # noqa: B009 - windll exists only on Windows
    kernel32.GetTickCount64.restype = ctypes.c_uint64
    return float(kernel32.GetTickCount64()) / 1000.0


def _monotonic_boot_id() -> str:
    """Elsewhere: CLOCK_BOOTTIME where it exists (seconds since boot, suspend included)."""
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return boot_time_id(time.clock_gettime(clock), time.time())


def _boot_id_reader(system: str) -> Callable[[], str]:
    if system == "Windows":
        return cache(lambda: boot_time_id(_windows_uptime(), time.time()))
    if system == "Linux" and LINUX_BOOT_ID.exists():
        return linux_boot_id
    return cache(_monotonic_boot_id)


def current_platform() -> Platform:
    system = _stdlib_platform.system()
    os_name = f"{system} {_stdlib_platform.release()} ({_stdlib_platform.machine()})"
    return Platform(system, socket.gethostname(), os_name[:100], _boot_id_reader(system))


def fake_platform(
    system: str = "Linux",
    *,
    hostname: str = "testhost",
    os_name: str | None = None,
    boot_id: str | Callable[[], str] = "boot-1",
) -> Platform:
    """A platform for tests; pass a callable ``boot_id`` to simulate a reboot."""
    reader = boot_id if callable(boot_id) else (lambda: str(boot_id))
    return Platform(system, hostname, os_name or f"{system} test", reader)

"""The platform layer: Linux verified for real here, Windows path rules and boot ids via fakes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from roost.agent.platform import (
    boot_time_id,
    current_platform,
    fake_platform,
    has_parent_reference,
    linux_boot_id,
    normalise_windows_path,
    windows_volume,
)

WINDOWS = fake_platform("Windows")
LINUX = fake_platform("Linux")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_current_platform_on_linux() -> None:
    here = current_platform()
    assert here.system == "Linux"
    assert here.os_name.startswith("Linux ")
    boot = here.boot_id()
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert len(boot) == 36 and here.boot_id() == boot


def test_linux_boot_id_reads_the_kernel_file(tmp_path: Path) -> None:
    fake = tmp_path / "boot_id"
    fake.write_text("3f1c0a52-1111-2222-3333-444455556666\n")
    assert linux_boot_id(fake) == "3f1c0a52-1111-2222-3333-444455556666"


def test_boot_time_id_is_the_boot_minute() -> None:
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert boot_time_id(3600.0 + 59.0, now) == "boot-20251231T2259Z"
    assert boot_time_id(3600.0 + 1.0, now) == "boot-20251231T2259Z"  # same boot, later read


def test_fake_platform_can_simulate_a_reboot() -> None:
    boots = iter(["boot-1", "boot-2"])
    platform = fake_platform(boot_id=lambda: next(boots))
    assert (platform.boot_id(), platform.boot_id()) == ("boot-1", "boot-2")


@pytest.mark.parametrize(
    ("path", "absolute"),
    [
        ("C:\\Data", True),
        ("c:/Data", True),
        ("\\\\fileserver\\share\\dir", True),
        ("\\\\fileserver\\share", True),
        ("C:Data", False),  # relative to the current directory of drive C
        ("\\Data", False),  # relative to the current drive
        ("Data\\x", False),
    ],
)
def test_windows_absolute_paths(path: str, absolute: bool) -> None:
    assert WINDOWS.is_absolute(path) is absolute


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("c:\\Data\\", "C:\\Data"),
        ("C:/Data/sub/../x", "C:\\Data\\x"),
        ("\\\\?\\d:\\Long\\Path", "D:\\Long\\Path"),
        ("\\\\?\\UNC\\srv\\share\\dir", "\\\\srv\\share\\dir"),
        ("\\\\srv\\share\\.\\dir", "\\\\srv\\share\\dir"),
    ],
)
def test_windows_paths_normalised(path: str, normal: str) -> None:
    assert normalise_windows_path(path) == normal
    assert WINDOWS.normalise(path) == normal


@pytest.mark.parametrize(
    ("path", "volume"),
    [("c:\\Data\\x", "C:"), ("\\\\?\\UNC\\srv\\share\\dir", "\\\\srv\\share")],
)
def test_windows_volume(path: str, volume: str) -> None:
    assert windows_volume(path) == volume


@pytest.mark.parametrize(
    ("path", "normal"), [("/srv//share/", "/srv/share"), ("//srv/x", "/srv/x"), ("/", "/")]
)
def test_posix_paths_normalised(path: str, normal: str) -> None:
    assert LINUX.normalise(path) == normal


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/srv/../etc", True),
        ("C:\\Data\\..\\Windows", True),
        ("..", True),
        ("/srv/..data/x", False),
        ("/srv/data..", False),
    ],
)
def test_parent_references_in_either_style(path: str, found: bool) -> None:
    assert has_parent_reference(path) is found

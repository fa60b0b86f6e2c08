"""Snapshot providers for the agent: VSS on Windows, btrfs and LVM on Linux, live otherwise.

Use: ``snap = prepare_snapshot(default_providers(state_dir), paths, job_id, mode)``, scan
``snap.read_paths``, put ``snap.log`` in the job log, and always finish with
``release_snapshot(providers, snap)``. At agent start, ``cleanup_all(providers)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from roost.agent.snapshots.base import (
    CommandFailed,
    CommandResult,
    CommandRunner,
    PreparedSnapshot,
    SnapshotError,
    SnapshotProvider,
    SubprocessRunner,
    cleanup_all,
    prepare_snapshot,
    release_snapshot,
)
from roost.agent.snapshots.btrfs import BtrfsProvider
from roost.agent.snapshots.live import LiveProvider
from roost.agent.snapshots.lvm import LvmProvider
from roost.agent.snapshots.vss import VssProvider

__all__ = [
    "BtrfsProvider",
    "CommandFailed",
    "CommandResult",
    "CommandRunner",
    "LiveProvider",
    "LvmProvider",
    "PreparedSnapshot",
    "SnapshotError",
    "SnapshotProvider",
    "SubprocessRunner",
    "VssProvider",
    "cleanup_all",
    "default_providers",
    "prepare_snapshot",
    "release_snapshot",
]


def default_providers(
    state_dir: Path, runner: CommandRunner | None = None, *, platform: str = sys.platform
) -> list[SnapshotProvider]:
    """The providers to try, in order, on this platform (none: every job reads live).

    btrfs comes before LVM so a btrfs on a logical volume gets a btrfs snapshot (LVM also
    refuses it). LVM snapshots are mounted under ``state_dir/lvm-mounts``.
    """
    runner = runner or SubprocessRunner()
    state_dir = Path(state_dir)
    if platform == "win32":
        return [VssProvider(runner, state_dir)]
    if platform.startswith("linux"):
        return [
            BtrfsProvider(runner, state_dir),
            LvmProvider(runner, state_dir, state_dir / "lvm-mounts"),
        ]
    return []

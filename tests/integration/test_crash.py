"""SIGKILL `roost backup` at several points: the repository stays sound and work is reused."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.helpers.cli import ROOST, Roost
from tests.helpers.compare import assert_trees_equal

pytestmark = pytest.mark.skipif(ROOST is None, reason="the roost console script is not installed")

PACK_SIZE = 256 * 1024
FILES = 48
FILE_SIZE = 400_000  # incompressible, so each file fills more than a pack


def _make_source(root: Path) -> None:
    root.mkdir()
    for i in range(FILES):
        (root / f"file{i:03d}.bin").write_bytes(os.urandom(FILE_SIZE))


def _packs(repo: Path) -> int:
    data = repo / "data"
    return sum(1 for p in data.rglob("*") if p.is_file() and not p.name.startswith(".tmp"))


def _kill_after_packs(roost: Roost, src: Path, packs: int) -> None:
    """Start a backup (slowed by a bandwidth-free trick: tiny checkpoints) and SIGKILL it."""
    assert ROOST is not None
    proc = subprocess.Popen(
        [ROOST, "backup", str(src), "--json"],
        env={**roost.env, "ROOST_CHECKPOINT_SECONDS": "0.2"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while _packs(roost.repo) < packs and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("kill_after_packs", [0, 3, 20, 60])
def test_backup_killed_leaves_a_sound_repository_and_is_resumed(
    tmp_path: Path, kill_after_packs: int
) -> None:
    src = tmp_path / "src"
    _make_source(src)
    reference = Roost(tmp_path / "reference", ROOST_PACK_SIZE=str(PACK_SIZE))
    reference.ok("init")
    full = reference.json("backup", src)

    roost = Roost(tmp_path / "repo", ROOST_PACK_SIZE=str(PACK_SIZE))
    roost.ok("init")
    _kill_after_packs(roost, src, kill_after_packs)
    stored_before = _packs(roost.repo)

    check = roost("check", "--read-data")
    assert check.code == 0, check.stdout + check.stderr
    resumed = roost.json("backup", src)
    assert resumed["files_missed"] == 0
    if stored_before:
        assert resumed["bytes_stored"] < full["bytes_stored"]
    assert roost("check", "--read-data").code == 0
    roost.ok("restore", "latest", "--target", tmp_path / "dst")
    assert_trees_equal(src, tmp_path / "dst" / src.relative_to("/"), check_atime=False)

"""DESIGN.md §1 steps 4 and 6-8 on Linux: a set on btrfs is read from a read-only snapshot that
is deleted afterwards, and a snapshot that cannot be taken falls back to a live scan, saying
so in the job log. A real btrfs: a loop-mounted image (root, btrfs-progs and loop devices;
the tests skip with the reason when any is missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers.api_client import Json
from tests.helpers.compare import assert_trees_equal
from tests.integration.workflow.support import Fleet, describe_job, restored, write_files

FALLBACK = "falling back to a live scan"  # roost.agent.snapshots.base.FALLBACK
SNAPSHOT_PREFIX = ".roost-snap-"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _must(*argv: str) -> str:
    done = _run(*argv)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def btrfs_top(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The top-level subvolume of a fresh 300 MiB btrfs, mounted for this module."""
    if os.geteuid() != 0:
        pytest.skip("needs root to attach a loop device and mount btrfs")
    if shutil.which("mkfs.btrfs") is None or shutil.which("btrfs") is None:
        pytest.skip("btrfs-progs not installed (mkfs.btrfs or btrfs missing)")
    base = tmp_path_factory.mktemp("btrfs")
    image = base / "btrfs.img"
    with image.open("wb") as out:
        out.truncate(300 * 2**20)  # sparse
    made = _run("mkfs.btrfs", "-q", str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.btrfs failed: {made.stderr.strip()}")
    loop = _run("losetup", "--find", "--show", str(image))
    if loop.returncode != 0:
        pytest.skip(f"losetup failed (needs loop devices): {loop.stderr.strip()}")
    device = loop.stdout.strip()
    top = base / "mnt"
    top.mkdir()
    try:
        mounted = _run("mount", device, str(top))
        if mounted.returncode != 0:
            pytest.skip(f"mounting btrfs failed: {mounted.stderr.strip()}")
        try:
            yield top
        finally:
            if _run("umount", str(top)).returncode != 0:
                _run("umount", "-l", str(top))
    finally:
        _run("losetup", "-d", device)


def _subvolume(path: Path) -> Path:
    _must("btrfs", "subvolume", "create", str(path))
    return path


def _roost_snapshots(top: Path) -> list[str]:
    listing = _must("btrfs", "subvolume", "list", str(top))
    return [line for line in listing.splitlines() if SNAPSHOT_PREFIX in line]


def _messages(job: Json) -> list[str]:
    return [str(line["message"]) for line in job["log"]]


def _files(root: Path) -> Path:
    return write_files(
        root,
        {
            "report.txt": b"quarterly numbers v1\n",
            "deep/er/blob.bin": os.urandom(2 * 2**20 + 17),
            "empty": b"",
        },
    )


def test_btrfs_set_is_backed_up_from_a_snapshot_that_is_removed_afterwards(
    fleet: Fleet, btrfs_top: Path, tmp_path: Path
) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    fleet.start_agent(name)
    subvolume = _subvolume(btrfs_top / fleet.name("data"))
    source = _files(subvolume / "share")
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)])

    job = fleet.run_backup(set_name)
    snapshot_dir = f"{subvolume}/{SNAPSHOT_PREFIX}{job['id']}"
    log = _messages(job)
    assert f"btrfs snapshot {snapshot_dir} created (read-only, of subvolume {subvolume})" in log
    assert "btrfs snapshot validated; scanning it instead of the live files" in log
    assert f"btrfs snapshot deleted: {snapshot_dir}" in log
    assert not any(FALLBACK in line for line in log), describe_job(job)
    assert job["summary"]["snapshot_provider"] == "btrfs"
    assert job["summary"]["files_new"] == 3

    # Step 8: the snapshot is gone, as a subvolume and as a directory.
    assert _roost_snapshots(btrfs_top) == []
    assert not os.path.lexists(snapshot_dir)

    # The snapshot records the set's paths, not the btrfs snapshot's.
    (snap,) = admin.snapshots(set_name)
    assert snap["id"] == job["snapshot_id"]
    assert snap["paths"] == [str(source)]
    entries = admin.ls(set_name, job["snapshot_id"], str(source))
    assert sorted((e["name"], e["path"]) for e in entries) == [
        ("deep", f"{source}/deep"),
        ("empty", f"{source}/empty"),
        ("report.txt", f"{source}/report.txt"),
    ]

    target = tmp_path / "restore"
    fleet.restore(set_name, target)
    assert_trees_equal(source, restored(target, source), check_atime=False)
    assert list(target.rglob(f"{SNAPSHOT_PREFIX}*")) == []

    # The next backup lines up with the first although each read a different snapshot.
    second = fleet.run_backup(set_name)
    assert second["level"] == "incremental"
    assert second["summary"]["files_unchanged"] == 3, describe_job(second)
    assert second["summary"]["bytes_read"] == 0
    assert _roost_snapshots(btrfs_top) == []


def test_failing_snapshot_provider_falls_back_to_live_scan_and_logs_it(
    fleet: Fleet, btrfs_top: Path, tmp_path: Path
) -> None:
    admin = fleet.admin
    name = fleet.name("agent")
    fleet.start_agent(name)
    subvolume = _subvolume(btrfs_top / fleet.name("data"))
    source = _files(subvolume / "share")
    # A nested subvolume would read as an empty directory in a snapshot: the provider refuses.
    nested = _subvolume(source / "nested")
    write_files(nested, {"inside.txt": b"only the live scan sees me\n"})
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)])

    job = fleet.run_backup(set_name)
    failure = (
        f"btrfs snapshot failed: {source} contains the nested btrfs subvolume {nested}, which a "
        "snapshot shows as an empty directory; back it up as a separate backup set; "
        f"{FALLBACK}"
    )
    log = _messages(job)
    assert failure in log, describe_job(job)
    assert job["summary"]["snapshot_provider"] == "live"
    assert not any("snapshot deleted" in line for line in log)  # nothing was made
    assert _roost_snapshots(btrfs_top) == []

    # The live scan read the nested subvolume too.
    entries = admin.ls(set_name, job["snapshot_id"], str(nested))
    assert [(e["name"], e["size"]) for e in entries] == [("inside.txt", 27)]
    target = tmp_path / "restore"
    fleet.restore(set_name, target)
    assert_trees_equal(source, restored(target, source), check_atime=False)

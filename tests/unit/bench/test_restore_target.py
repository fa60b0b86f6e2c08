"""The benchmark's fresh ext4 restore target (bench/restoretarget.py): sizing, the fallback to
a plain directory, clean-up; the real mount path only as root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))  # the benchmark's modules import each other by plain name

import restoretarget  # noqa: E402
from datasets import FileEntry  # noqa: E402

MiB = 2**20


def test_plan_counts_whole_blocks_and_sets_enough_inodes() -> None:
    # a million 1 KiB files: 4 GB of blocks, more inodes than ext4's 1 per 16 KiB would give
    entries = [FileEntry(f"d{i % 1000}/f{i}", 1024) for i in range(1_000_000)]
    plan = restoretarget.plan_image(entries)
    assert plan.size_bytes >= 4 * 1_000_000 * 4096  # free space stays > 3 x the data
    assert plan.size_bytes % MiB == 0
    assert plan.inodes >= 1_000_000 + 1000
    assert plan.inodes > plan.size_bytes // (16 * 1024)


def test_plan_has_headroom_for_big_files() -> None:
    plan = restoretarget.plan_image([FileEntry("a/b/big", 4 * 2**30)])
    assert plan.size_bytes >= 4 * 4 * 2**30 + restoretarget.JOURNAL_MIB * MiB
    assert plan.inodes >= 2 * (1 + 2)  # the file and its two directories


def test_a_small_plan_still_has_room_for_the_journal() -> None:
    plan = restoretarget.plan_image([FileEntry("f", 1)])
    assert plan.size_bytes >= 2 * restoretarget.JOURNAL_MIB * MiB  # mke2fs: <= half
    assert plan.size_bytes == restoretarget.MIN_IMAGE


def test_directories_counts_every_ancestor_once() -> None:
    entries = [FileEntry("a/b/c/f", 1), FileEntry("a/b/g", 1), FileEntry("top", 1)]
    assert restoretarget._directories(entries) == 3  # a, a/b, a/b/c


def test_refusal_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = restoretarget.refusal()
    assert reason is not None and "root" in reason


def test_refusal_when_a_program_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(restoretarget, "_which", lambda name: None if name == "mkfs.ext4" else "x")
    assert restoretarget.refusal() == "mkfs.ext4 not found"


def test_no_refusal_as_root_with_the_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(restoretarget, "_which", lambda name: f"/usr/sbin/{name}")
    assert restoretarget.refusal() is None


def test_not_root_falls_back_to_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    target = tmp_path / "restore"
    target.mkdir()
    notes: list[str] = []

    def never(argv: list[str]) -> None:
        raise AssertionError(f"ran {argv} without root")

    plan = restoretarget.ImagePlan(64 * MiB, 1000)
    with restoretarget.fresh_target(target, plan, notes.append, never) as kind:
        (target / "file").write_bytes(b"x")  # the restore goes into the plain directory
    assert kind.startswith("directory (not root")
    assert len(notes) == 1 and "plain directory" in notes[0]
    assert (target / "file").exists()
    assert not (tmp_path / restoretarget.IMAGE_NAME).exists()


def test_failed_mount_falls_back_and_removes_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restoretarget, "refusal", lambda: None)
    target = tmp_path / "restore"
    target.mkdir()
    ran: list[list[str]] = []

    def mount_fails(argv: list[str]) -> None:
        ran.append(argv)
        if argv[0] == "mount":
            raise subprocess.CalledProcessError(32, argv, stderr="mount: permission denied\n")

    notes: list[str] = []
    plan = restoretarget.ImagePlan(64 * MiB, 1000)
    with restoretarget.fresh_target(target, plan, notes.append, mount_fails) as kind:
        pass
    assert kind == (
        "directory (cannot make or mount the image: mount failed (exit 32): "
        "mount: permission denied)"
    )
    assert [argv[0] for argv in ran] == ["mkfs.ext4", "mount"]  # no umount of what never was
    assert "-N" in ran[0] and "1000" in ran[0]
    assert "lazy_itable_init=0,lazy_journal_init=0" in ran[0]
    assert f"size={restoretarget.JOURNAL_MIB}" in ran[0]
    assert not (tmp_path / restoretarget.IMAGE_NAME).exists()
    assert notes and "plain directory" in notes[0]


def test_mounted_target_is_unmounted_and_deleted_on_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restoretarget, "refusal", lambda: None)
    target = tmp_path / "restore"
    target.mkdir()
    ran: list[str] = []
    plan = restoretarget.ImagePlan(64 * MiB, 1000)
    with (
        pytest.raises(KeyboardInterrupt),
        restoretarget.fresh_target(target, plan, print, lambda argv: ran.append(argv[0])) as kind,
    ):
        assert kind.startswith("ext4 image (64 MiB, 1000 inodes")
        image = tmp_path / restoretarget.IMAGE_NAME
        assert image.stat().st_size == 64 * MiB
        assert image.stat().st_blocks == 0  # sparse
        raise KeyboardInterrupt
    assert ran == ["mkfs.ext4", "mount", "umount"]
    assert not image.exists()


def test_busy_unmount_ends_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restoretarget.time, "sleep", lambda seconds: None)
    ran: list[list[str]] = []

    def busy(argv: list[str]) -> None:
        ran.append(argv)
        if argv[:2] != ["umount", "-l"]:
            raise subprocess.CalledProcessError(32, argv, stderr="target is busy")

    notes: list[str] = []
    restoretarget._unmount(tmp_path, notes.append, busy)
    assert len(ran) == restoretarget.UMOUNT_TRIES + 1
    assert ran[-1] == ["umount", "-l", str(tmp_path)]
    assert notes and "lazily" in notes[0]


def test_mounts_under_finds_nested_mounts_deepest_first() -> None:
    info = (
        "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "90 22 7:0 / /var/tmp/c/work/roost/restore rw,relatime shared:50 - ext4 /dev/loop0 rw\n"
        "91 90 7:1 / /var/tmp/c/work/roost/restore/x rw shared:51 - ext4 /dev/loop1 rw\n"
        "92 22 7:2 / /var/tmp/c/work2/y rw shared:52 - ext4 /dev/loop2 rw\n"
        "93 22 7:3 / /var/tmp/c/work/with\\040space rw shared:53 - ext4 /dev/loop3 rw\n"
    )
    assert restoretarget.mounts_under(Path("/var/tmp/c/work"), info) == [
        Path("/var/tmp/c/work/roost/restore/x"),
        Path("/var/tmp/c/work/roost/restore"),
        Path("/var/tmp/c/work/with space"),
    ]


@pytest.mark.skipif(
    restoretarget.refusal() is not None,
    reason=f"needs root, mkfs.ext4 and mount: {restoretarget.refusal()}",
)
def test_real_image_is_a_fresh_ext4_and_goes_away(tmp_path: Path) -> None:
    target = tmp_path / "restore"
    target.mkdir()
    plan = restoretarget.plan_image([FileEntry("a/b", 10 * MiB)])
    notes: list[str] = []
    with restoretarget.fresh_target(target, plan, notes.append) as kind:
        if kind.startswith("directory"):  # e.g. no loop devices in this container
            pytest.skip(f"the mount failed here: {kind}")
        assert os.stat(target).st_dev != os.stat(tmp_path).st_dev
        assert sorted(os.listdir(target)) == ["lost+found"]
        assert os.statvfs(target).f_files >= plan.inodes
        (target / "file").write_bytes(b"restored")
        stale = restoretarget.mounts_under(
            tmp_path.resolve(), Path("/proc/self/mountinfo").read_text()
        )
        assert stale == [target.resolve()]
    assert os.stat(target).st_dev == os.stat(tmp_path).st_dev
    assert os.listdir(target) == []
    assert not (tmp_path / restoretarget.IMAGE_NAME).exists()
    assert notes == []

"""BtrfsProvider against a real btrfs: a loop-mounted 300 MiB image built for each test.

Needs btrfs-progs and root (losetup, mount); skips with the reason otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.helpers.require import skip_unless_required

from roost.agent.snapshots.base import (
    SnapshotError,
    StateFile,
    SubprocessRunner,
    prepare_snapshot,
    release_snapshot,
)
from roost.agent.snapshots.btrfs import BtrfsProvider

FALLBACK = "falling back to a live scan"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _must(*argv: str) -> str:
    done = _run(*argv)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


@dataclass
class Btrfs:
    device: str
    top: Path  # the top-level subvolume (id 5), mounted here
    state_dir: Path

    def subvolume(self, relative: str) -> Path:
        path = self.top / relative
        _must("btrfs", "subvolume", "create", str(path))
        return path

    def mount_subvolume(self, subvol: str, target: Path) -> None:
        target.mkdir()
        _must("mount", "-o", f"subvol={subvol}", self.device, str(target))

    def provider(self) -> BtrfsProvider:
        return BtrfsProvider(SubprocessRunner(), self.state_dir)

    def state(self) -> list[str]:
        return StateFile(self.state_dir / "btrfs-snapshots.json").entries()


@pytest.fixture
def btrfs(tmp_path: Path) -> Iterator[Btrfs]:
    if shutil.which("mkfs.btrfs") is None or shutil.which("btrfs") is None:
        skip_unless_required("btrfs", "btrfs-progs not installed (mkfs.btrfs missing)")
    image = tmp_path / "btrfs.img"
    with image.open("wb") as out:
        out.truncate(300 * 2**20)  # sparse
    made = _run("mkfs.btrfs", "-q", str(image))
    if made.returncode != 0:
        skip_unless_required("btrfs", f"mkfs.btrfs failed: {made.stderr.strip()}")
    loop = _run("losetup", "--find", "--show", str(image))
    if loop.returncode != 0:
        skip_unless_required(
            "btrfs", f"losetup failed (needs root and loop devices): {loop.stderr.strip()}"
        )
    device = loop.stdout.strip()
    top = tmp_path / "mnt"
    top.mkdir()
    mounts: list[Path] = []
    try:
        mounted = _run("mount", device, str(top))
        if mounted.returncode != 0:
            skip_unless_required(
                "btrfs", f"mounting btrfs failed (needs root): {mounted.stderr.strip()}"
            )
        mounts.append(top)
        yield Btrfs(device, top, tmp_path / "state")
    finally:
        _unmount_all(tmp_path, mounts)
        _run("losetup", "-d", device)


def _unmount_all(tmp_path: Path, mounts: list[Path]) -> None:
    """Unmount everything this test mounted under tmp_path, innermost first."""
    mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounted if m.startswith(str(tmp_path))), reverse=True):
        if _run("umount", point).returncode != 0:
            _run("umount", "-l", point)


def _fill(root: Path) -> dict[str, bytes]:
    files = {
        "report.txt": b"quarterly numbers v1\n",
        "deep/er/blob.bin": os.urandom(3 * 2**20 + 17),
        "empty": b"",
    }
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return files


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_snapshot_is_a_read_only_point_in_time_copy(btrfs: Btrfs) -> None:
    data = btrfs.subvolume("data")
    share = data / "share"
    files = _fill(share)
    provider = btrfs.provider()
    assert provider.applicable([str(share)])

    snap = provider.create([str(share)], "job1")
    target = data / ".roost-snap-job1"
    assert snap.handles == [str(target)]
    assert snap.read_paths == {str(share): str(target / "share")}
    assert btrfs.state() == [str(target)]  # recorded while it exists
    assert os.stat(target).st_ino == 256  # a subvolume root
    assert _must("btrfs", "property", "get", "-ts", str(target), "ro").strip() == "ro=true"
    provider.validate(snap)
    assert _tree(Path(snap.read_paths[str(share)])) == files

    (share / "report.txt").write_bytes(b"quarterly numbers v2, rewritten\n")
    (share / "new.txt").write_bytes(b"after the snapshot")
    frozen = Path(snap.read_paths[str(share)])
    assert (frozen / "report.txt").read_bytes() == b"quarterly numbers v1\n"
    assert not (frozen / "new.txt").exists()
    with pytest.raises(OSError) as refused:
        (frozen / "report.txt").write_bytes(b"x")
    assert refused.value.errno == errno.EROFS

    provider.delete(snap)
    assert not target.exists()
    assert btrfs.state() == []
    assert (share / "report.txt").read_bytes() == b"quarterly numbers v2, rewritten\n"


@pytest.mark.parametrize("where", ["subvolume root", "top level"])
def test_snapshot_of_a_whole_subvolume_holds_no_snapshots(btrfs: Btrfs, where: str) -> None:
    root = btrfs.subvolume("data") if where == "subvolume root" else btrfs.top
    files = _fill(root)
    provider = btrfs.provider()
    other = provider.create([str(root)], "other")  # another job's snapshot, still present
    snap = provider.create([str(root)], "mine")
    read_root = Path(snap.read_paths[str(root)])
    assert read_root == root / ".roost-snap-mine"
    provider.validate(snap)
    # the snapshot does not contain itself, and the other job's snapshot is an empty dir
    assert sorted(p.name for p in read_root.iterdir()) == sorted(
        [".roost-snap-other", *{name.split("/")[0] for name in files}]
    )
    assert list((read_root / ".roost-snap-other").iterdir()) == []
    assert _tree(read_root) == files
    provider.delete(snap)
    provider.delete(other)
    assert sorted(p.name for p in root.glob(".roost-snap-*")) == []


def test_prepare_and_release_end_to_end(btrfs: Btrfs) -> None:
    data = btrfs.subvolume("data")
    files = _fill(data / "share")
    (data / "docs").mkdir()
    (data / "docs" / "a.txt").write_text("alpha")
    provider = btrfs.provider()
    paths = [str(data / "share"), str(data / "docs" / "a.txt")]
    snap = prepare_snapshot([provider], paths, "job3", "auto")
    target = data / ".roost-snap-job3"
    assert snap.provider == "btrfs"
    assert snap.read_paths == {paths[0]: f"{target}/share", paths[1]: f"{target}/docs/a.txt"}
    assert snap.log == [
        f"btrfs snapshot {target} created (read-only, of subvolume {data})",
        "btrfs snapshot validated; scanning it instead of the live files",
    ]
    assert _tree(Path(snap.read_paths[paths[0]])) == files
    assert Path(snap.read_paths[paths[1]]).read_text() == "alpha"
    assert release_snapshot([provider], snap) == [f"btrfs snapshot deleted: {target}"]
    assert not target.exists()


def test_two_subvolumes_get_one_snapshot_each(btrfs: Btrfs) -> None:
    one, two = btrfs.subvolume("one"), btrfs.subvolume("two")
    (one / "f").write_text("1")
    (two / "g").write_text("2")
    provider = btrfs.provider()
    snap = prepare_snapshot([provider], [str(one / "f"), str(two)], "j", "auto")
    assert snap.handles == [str(one / ".roost-snap-j"), str(two / ".roost-snap-j")]
    assert Path(snap.read_paths[str(one / "f")]).read_text() == "1"
    assert (Path(snap.read_paths[str(two)]) / "g").read_text() == "2"
    assert release_snapshot([provider], snap) == [
        f"btrfs snapshot deleted: {one}/.roost-snap-j, {two}/.roost-snap-j"
    ]
    assert btrfs.state() == []


@pytest.mark.parametrize("mounted", ["from the top level", "as a subvolume mount"])
def test_nested_subvolume_under_a_source_falls_back_to_live(btrfs: Btrfs, mounted: str) -> None:
    data = btrfs.subvolume("data")
    (data / "d").mkdir()
    inner = btrfs.subvolume("data/d/inner")
    (inner / "precious").write_text("would read as missing in a snapshot of data")
    base = data
    if mounted == "as a subvolume mount":
        base = btrfs.top.parent / "data-mount"
        btrfs.mount_subvolume("/data", base)
    source = str(base / "d")
    snap = prepare_snapshot([btrfs.provider()], [source], "job4", "auto")
    assert (snap.provider, snap.read_paths) == ("live", {source: source})
    assert snap.log == [
        f"btrfs snapshot failed: {source} contains the nested btrfs subvolume {base}/d/inner, "
        "which a snapshot shows as an empty directory; back it up as a separate backup set; "
        f"{FALLBACK}"
    ]
    assert list(base.glob(".roost-snap-*")) == []
    assert btrfs.state() == []


def test_a_nested_subvolume_beside_the_source_is_fine(btrfs: Btrfs) -> None:
    data = btrfs.subvolume("data")
    btrfs.subvolume("data/elsewhere")
    (data / "share").mkdir()
    (data / "share" / "f").write_text("x")
    provider = btrfs.provider()
    snap = prepare_snapshot([provider], [str(data / "share")], "job5", "auto")
    assert snap.provider == "btrfs"
    assert (Path(snap.read_paths[str(data / "share")]) / "f").read_text() == "x"
    release_snapshot([provider], snap)


def test_cleanup_removes_snapshots_orphaned_by_a_crash(btrfs: Btrfs) -> None:
    data = btrfs.subvolume("data")
    (data / "f").write_text("x")
    crashed = btrfs.provider()
    crashed.create([str(data)], "crashed1")
    crashed.create([str(data)], "crashed2")
    del crashed  # the agent died: no delete
    # the record of one was lost too: it is still found beside the recorded one
    StateFile(btrfs.state_dir / "btrfs-snapshots.json").remove(str(data / ".roost-snap-crashed2"))
    (data / ".roost-snap-not-a-subvolume").mkdir()  # a plain directory is left alone

    restarted = btrfs.provider()
    assert restarted.cleanup_leftovers() == [
        str(data / ".roost-snap-crashed1"),
        str(data / ".roost-snap-crashed2"),
    ]
    assert sorted(p.name for p in data.iterdir()) == [".roost-snap-not-a-subvolume", "f"]
    assert btrfs.state() == []
    assert restarted.cleanup_leftovers() == []


def test_validate_catches_a_writable_or_missing_snapshot(btrfs: Btrfs) -> None:
    data = btrfs.subvolume("data")
    (data / "f").write_text("x")
    provider = btrfs.provider()
    snap = prepare_snapshot([provider], [str(data / "f")], "job6", "auto")
    target = snap.handles[0]
    _must("btrfs", "property", "set", "-ts", target, "ro", "false")
    with pytest.raises(SnapshotError, match=r"is not read-only \(ro=false\)"):
        provider.validate(snap)
    _must("btrfs", "property", "set", "-ts", target, "ro", "true")
    provider.validate(snap)
    provider.delete(snap)
    with pytest.raises(SnapshotError, match=f"btrfs snapshot {target} is missing"):
        provider.validate(snap)


def test_not_applicable_off_btrfs(btrfs: Btrfs, tmp_path: Path) -> None:
    elsewhere = tmp_path / "plain"
    elsewhere.mkdir()
    reason = btrfs.provider().unsupported_reason([str(btrfs.top), str(elsewhere)])
    assert reason is not None and reason.startswith(f"{elsewhere} is on ")
    assert reason.endswith(", not btrfs")

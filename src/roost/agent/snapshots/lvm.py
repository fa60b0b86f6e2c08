"""LVM: a copy-on-write snapshot of each logical volume holding a source path, mounted read-only.

For ext2/3/4 and xfs on a (thick or thin) logical volume: ``lvcreate -s`` with copy-on-write
space sized as a share of the origin (10 % by default), mounted read-only under
``mount_root/<job>``; the scanner reads the files from there. xfs refuses to mount a second
file system with the same UUID, hence ``nouuid``. btrfs on LVM is refused on purpose: a
block-level copy of a mounted btrfs (same file system UUID) must never be mounted beside it;
the btrfs provider handles those paths. A snapshot whose copy-on-write space overflowed is
marked invalid by LVM (``lv_attr`` state ``I``), which ``validate`` catches.

Every snapshot LV is named ``roost-snap-<job>`` (``-<n>`` appended for a job's further
volumes), so leftovers are found by name even if the state file lost a record.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from roost.agent.snapshots.base import (
    MOUNTINFO,
    CommandRunner,
    MountEntry,
    PreparedSnapshot,
    SnapshotError,
    StateFile,
    check_job_id,
    mount_of,
    mounted_at,
    read_mountinfo,
    roll_back,
    within,
)

SNAPSHOT_PREFIX = "roost-snap-"
STATE_FILE = "lvm-snapshots.json"
SUPPORTED_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs"})
_SECTOR = 512


@dataclass(frozen=True, slots=True)
class Origin:
    """The logical volume that holds a source path, and where it is mounted."""

    vg: str
    lv: str
    mount: MountEntry

    @property
    def name(self) -> str:
        return f"{self.vg}/{self.lv}"


class LvmProvider:
    """Snapshots for paths on LVM logical volumes, through lvs / lvcreate / mount / lvremove."""

    name = "lvm"

    def __init__(
        self,
        runner: CommandRunner,
        state_dir: Path,
        mount_root: Path,
        *,
        snapshot_percent: float = 10.0,
        mountinfo: Path = MOUNTINFO,
    ) -> None:
        if not 0 < snapshot_percent <= 100:
            raise ValueError(f"snapshot_percent must be in (0, 100], not {snapshot_percent}")
        self._runner = runner
        self._state = StateFile(Path(state_dir) / STATE_FILE)
        self._mount_root = Path(os.path.realpath(mount_root))  # as mountinfo will show it
        self._percent = snapshot_percent
        self._mountinfo = mountinfo

    def unsupported_reason(self, paths: list[str]) -> str | None:
        if not paths:
            return "no paths to snapshot"
        try:
            self._origins(paths)
        except SnapshotError as exc:
            return str(exc)
        return None

    def applicable(self, paths: list[str]) -> bool:
        return self.unsupported_reason(paths) is None

    def create(self, paths: list[str], job_id: str) -> PreparedSnapshot:
        check_job_id(job_id)
        origins = self._origins(paths)
        distinct = list({origin.name: origin for origin in origins.values()}.values())
        snap = PreparedSnapshot(self.name, list(paths), {})
        names = {}
        try:
            for index, origin in enumerate(distinct):
                names[origin.name] = snapshot_name(job_id, index)
                self._create_one(origin, names[origin.name], snap)
        except BaseException as exc:
            roll_back(self, snap, exc)
            raise
        for path, origin in origins.items():
            snap.read_paths[path] = self._read_path(path, origin, names[origin.name])
        return snap

    def validate(self, snap: PreparedSnapshot) -> None:
        mounts = read_mountinfo(self._mountinfo)
        for handle in snap.handles:
            self._check_attr(handle)
            self._check_mounted(mounts, handle)
        for source, read_path in snap.read_paths.items():
            if not os.path.lexists(read_path):
                raise SnapshotError(f"{source} is absent from the snapshot (no {read_path})")

    def delete(self, snap: PreparedSnapshot) -> None:
        mounts = read_mountinfo(self._mountinfo)
        errors = []
        for handle in snap.handles:
            try:
                self._delete(handle, mounts)
            except (SnapshotError, OSError) as exc:
                errors.append(str(exc))
        if errors:
            raise SnapshotError("; ".join(errors))

    def cleanup_leftovers(self) -> list[str]:
        """Unmount everything under ``mount_root`` and remove every ``roost-snap-*`` LV.

        Runs ``lvs`` only when a record or a mount says a snapshot may exist, so machines
        without LVM see no failing command at each start. Call only when no job is running.
        """
        mounts = [m for m in read_mountinfo(self._mountinfo) if self._is_ours(m.mount_point)]
        recorded = self._state.entries()
        if not mounts and not recorded:
            return []
        errors: list[str] = []
        for mount in reversed(mounts):  # innermost first
            self._attempt(["umount", mount.mount_point], errors)
        leftovers = self._leftover_lvs()
        removed = [lv for lv in leftovers if self._attempt(["lvremove", "-f", lv], errors)]
        for handle in recorded:
            if handle in removed or handle not in leftovers:
                self._state.remove(handle)
        self._remove_mount_dirs()
        if errors:
            raise SnapshotError(f"removed {removed or 'nothing'}; failed: {'; '.join(errors)}")
        return removed

    def _attempt(self, argv: list[str], errors: list[str]) -> bool:
        try:
            self._runner.run(argv)
        except SnapshotError as exc:
            errors.append(str(exc))
            return False
        return True

    def _origins(self, paths: list[str]) -> dict[str, Origin]:
        mounts = read_mountinfo(self._mountinfo)
        by_device: dict[str, Origin] = {}
        origins = {}
        for path in paths:
            real = os.path.realpath(path)
            if not os.path.exists(real):
                raise SnapshotError(f"{path} does not exist")
            mount = mount_of(mounts, real)
            if mount is None:
                raise SnapshotError(f"{path} is on no known mount")
            if mount.source not in by_device:
                by_device[mount.source] = self._origin(path, mount)
            origins[path] = by_device[mount.source]
        return origins

    def _origin(self, path: str, mount: MountEntry) -> Origin:
        if mount.fstype == "btrfs":
            raise SnapshotError(
                f"{path} is on btrfs; a block copy of a mounted btrfs must not be mounted"
            )
        if mount.fstype not in SUPPORTED_FILESYSTEMS:
            raise SnapshotError(f"{path} is on {mount.fstype}, not ext2/3/4 or xfs")
        lvs = ["lvs", "--noheadings", "-o", "vg_name,lv_name", mount.source]
        result = self._runner.run(lvs, check=False)
        fields = result.stdout.split()
        if result.returncode != 0 or len(fields) != 2:
            raise SnapshotError(f"{path} is on {mount.source}, not an LVM logical volume")
        return Origin(fields[0], fields[1], mount)

    def _create_one(self, origin: Origin, name: str, snap: PreparedSnapshot) -> None:
        size = self._snapshot_size(origin)
        handle = f"{origin.vg}/{name}"
        self._state.add(handle)  # recorded first: a crash from here on leaves a trace
        try:
            self._runner.run(["lvcreate", "-s", "-n", name, "-L", f"{size}b", origin.name])
        except BaseException:
            self._state.remove(handle)  # a timed-out lvcreate that did succeed is found by name
            raise
        snap.handles.append(handle)
        snap.log.append(f"LVM snapshot {handle} of {origin.name} created ({size} bytes COW space)")
        mount_point = self._mount_point(handle)
        mount_point.mkdir(parents=True, exist_ok=True)
        options = "ro,nouuid" if origin.mount.fstype == "xfs" else "ro"
        self._runner.run(["mount", "-o", options, f"/dev/{handle}", str(mount_point)])
        snap.log.append(f"LVM snapshot {handle} mounted read-only at {mount_point}")

    def _snapshot_size(self, origin: Origin) -> int:
        """Copy-on-write space: a share of the origin, in whole sectors."""
        argv = ["lvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "lv_size"]
        text = self._runner.run([*argv, origin.name]).stdout.strip()
        try:
            origin_bytes = int(text)
        except ValueError:
            raise SnapshotError(f"lvs printed no size for {origin.name}: {text!r}") from None
        wanted = math.ceil(origin_bytes * self._percent / 100)
        return -(-wanted // _SECTOR) * _SECTOR

    def _read_path(self, path: str, origin: Origin, name: str) -> str:
        """Where ``path`` appears in the snapshot's mount; ``mount.root`` covers bind mounts."""
        inside = os.path.relpath(os.path.realpath(path), origin.mount.mount_point)
        mount_point = self._mount_point(f"{origin.vg}/{name}")
        base = os.path.join(mount_point, origin.mount.root.lstrip("/"))
        return os.path.normpath(os.path.join(base, inside))

    def _check_attr(self, handle: str) -> None:
        attr = self._runner.run(["lvs", "--noheadings", "-o", "lv_attr", handle]).stdout.strip()
        if len(attr) < 5 or attr[0] != "s":
            raise SnapshotError(f"{handle} is not an LVM snapshot (lv_attr {attr!r})")
        if attr[4] in "IS":
            raise SnapshotError(
                f"LVM snapshot {handle} is invalid (lv_attr {attr}): its copy-on-write space "
                "overflowed; raise the snapshot size"
            )

    def _check_mounted(self, mounts: list[MountEntry], handle: str) -> None:
        mount_point = str(self._mount_point(handle))
        mount = mounted_at(mounts, mount_point)
        if mount is None:
            raise SnapshotError(f"LVM snapshot {handle} is not mounted at {mount_point}")
        if "ro" not in mount.options:
            raise SnapshotError(f"LVM snapshot {handle} is mounted writable at {mount_point}")

    def _delete(self, handle: str, mounts: list[MountEntry]) -> None:
        mount_point = self._mount_point(handle)
        if mounted_at(mounts, str(mount_point)) is not None:
            self._runner.run(["umount", str(mount_point)])
        self._runner.run(["lvremove", "-f", handle])
        self._state.remove(handle)
        with contextlib.suppress(OSError):  # an empty directory left behind is harmless
            mount_point.rmdir()

    def _leftover_lvs(self) -> list[str]:
        listing = self._runner.run(["lvs", "--noheadings", "-o", "vg_name,lv_name"]).stdout
        pairs = [line.split() for line in listing.splitlines()]
        return [f"{p[0]}/{p[1]}" for p in pairs if len(p) == 2 and p[1].startswith(SNAPSHOT_PREFIX)]

    def _remove_mount_dirs(self) -> None:
        with contextlib.suppress(OSError):
            for child in self._mount_root.iterdir():
                with contextlib.suppress(OSError):
                    child.rmdir()

    def _mount_point(self, handle: str) -> Path:
        name = handle.rpartition("/")[2]
        return self._mount_root / name.removeprefix(SNAPSHOT_PREFIX)

    def _is_ours(self, mount_point: str) -> bool:
        root = str(self._mount_root)
        return mount_point != root and within(mount_point, root)


def snapshot_name(job_id: str, index: int) -> str:
    """``roost-snap-<job>`` for a job's first volume, ``roost-snap-<job>-<n>`` for the others."""
    return f"{SNAPSHOT_PREFIX}{job_id}" + (f"-{index}" if index else "")

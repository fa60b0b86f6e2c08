"""btrfs: a read-only snapshot of each subvolume holding a source path (beyond the reference).

The snapshot lives inside the subvolume it copies (``<subvol>/.roost-snap-<job>``), so it is
on the same file system and costs nothing until files change. It cannot recurse: a snapshot
never contains itself, and any *other* subvolume below the snapshotted one (including another
job's ``.roost-snap-*``) appears in a snapshot as an empty directory. That last fact is also
the danger: a source path with a real nested subvolume below it would silently lose that
subvolume's files, so ``create`` refuses it and the job falls back to a live scan.

Facts used (btrfs on-disk format): every subvolume has its own ``st_dev``, and the root
directory of every subvolume has inode number 256.
"""

from __future__ import annotations

import os
from pathlib import Path

from roost.agent.snapshots.base import (
    MOUNTINFO,
    CommandRunner,
    MountEntry,
    PreparedSnapshot,
    SnapshotError,
    StateFile,
    check_job_id,
    iter_roost_dirs,
    mount_of,
    read_mountinfo,
    roll_back,
    unique,
    within,
)

SNAPSHOT_PREFIX = ".roost-snap-"
SUBVOLUME_ROOT_INODE = 256
STATE_FILE = "btrfs-snapshots.json"


class BtrfsProvider:
    """Snapshots for paths on btrfs, through the ``btrfs`` command (btrfs-progs)."""

    name = "btrfs"

    def __init__(
        self, runner: CommandRunner, state_dir: Path, *, mountinfo: Path = MOUNTINFO
    ) -> None:
        self._runner = runner
        self._state = StateFile(Path(state_dir) / STATE_FILE)
        self._mountinfo = mountinfo

    def unsupported_reason(self, paths: list[str]) -> str | None:
        if not paths:
            return "no paths to snapshot"
        mounts = read_mountinfo(self._mountinfo)
        for path in paths:
            real = os.path.realpath(path)
            if not os.path.exists(real):
                return f"{path} does not exist"
            mount = mount_of(mounts, real)
            fstype = mount.fstype if mount else "an unknown file system"
            if fstype != "btrfs":
                return f"{path} is on {fstype}, not btrfs"
        return None

    def applicable(self, paths: list[str]) -> bool:
        return self.unsupported_reason(paths) is None

    def create(self, paths: list[str], job_id: str) -> PreparedSnapshot:
        check_job_id(job_id)
        reals = {path: os.path.realpath(path) for path in paths}
        subvolumes = {path: subvolume_root(real) for path, real in reals.items()}
        snap = PreparedSnapshot(self.name, list(paths), {})
        try:
            for subvolume in unique(subvolumes.values()):
                covered = [real for path, real in reals.items() if subvolumes[path] == subvolume]
                self._refuse_nested(subvolume, covered)
                self._snapshot(subvolume, snapshot_path(subvolume, job_id), snap)
        except BaseException as exc:
            roll_back(self, snap, exc)
            raise
        for path, real in reals.items():
            inside = os.path.relpath(real, subvolumes[path])
            target = snapshot_path(subvolumes[path], job_id)
            snap.read_paths[path] = os.path.normpath(os.path.join(target, inside))
        return snap

    def validate(self, snap: PreparedSnapshot) -> None:
        for target in snap.handles:
            if not is_subvolume(target):
                raise SnapshotError(f"btrfs snapshot {target} is missing")
            ro = self._run("property", "get", "-ts", target, "ro").strip()
            if ro != "ro=true":
                raise SnapshotError(f"btrfs snapshot {target} is not read-only ({ro or '?'})")
        for source, read_path in snap.read_paths.items():
            if not os.path.lexists(read_path):
                raise SnapshotError(f"{source} is absent from the snapshot (no {read_path})")

    def delete(self, snap: PreparedSnapshot) -> None:
        errors = []
        for target in snap.handles:
            try:
                self._delete(target)
            except (SnapshotError, OSError) as exc:
                errors.append(str(exc))
        if errors:
            raise SnapshotError("; ".join(errors))

    def cleanup_leftovers(self) -> list[str]:
        """Delete every ``.roost-snap-*`` subvolume beside a recorded one.

        Scanning the recorded parents (not only the recorded names) also catches a snapshot
        whose record was lost. A parent that does not exist now (file system not mounted yet)
        keeps its records for the next start. Call only when no job is running.
        """
        removed, errors = [], []
        recorded = self._state.entries()
        for parent in unique([os.path.dirname(target) for target in recorded]):
            for target in iter_roost_dirs(parent, SNAPSHOT_PREFIX):
                if is_subvolume(target):
                    try:
                        self._run("subvolume", "delete", target)
                        removed.append(target)
                    except SnapshotError as exc:
                        errors.append(str(exc))
        for target in recorded:
            if os.path.isdir(os.path.dirname(target)) and not os.path.lexists(target):
                self._state.remove(target)
        if errors:
            raise SnapshotError(f"removed {removed or 'nothing'}; failed: {'; '.join(errors)}")
        return removed

    def _snapshot(self, subvolume: str, target: str, snap: PreparedSnapshot) -> None:
        self._state.add(target)  # recorded first: a crash from here on leaves a trace
        try:
            self._run("subvolume", "snapshot", "-r", subvolume, target)
        except BaseException:
            if not os.path.lexists(target):
                self._state.remove(target)
            raise
        snap.handles.append(target)
        snap.log.append(f"btrfs snapshot {target} created (read-only, of subvolume {subvolume})")

    def _refuse_nested(self, subvolume: str, covered: list[str]) -> None:
        """Refuse when a nested subvolume lies under a source path (it would read as empty)."""
        mount = mount_of(read_mountinfo(self._mountinfo), subvolume)
        listing = self._run("subvolume", "list", "-o", subvolume)
        for nested in nested_subvolumes(listing, mount):
            if os.path.basename(nested).startswith(SNAPSHOT_PREFIX):
                continue
            for real in covered:
                if within(nested, real):
                    raise SnapshotError(
                        f"{real} contains the nested btrfs subvolume {nested}, which a snapshot "
                        "shows as an empty directory; back it up as a separate backup set"
                    )

    def _delete(self, target: str) -> None:
        if is_subvolume(target):
            self._run("subvolume", "delete", target)
        elif os.path.lexists(target):
            raise SnapshotError(f"{target} is not a btrfs subvolume; left it in place")
        self._state.remove(target)

    def _run(self, *args: str) -> str:
        return self._runner.run(["btrfs", *args]).stdout


def snapshot_path(subvolume: str, job_id: str) -> str:
    return os.path.join(subvolume, SNAPSHOT_PREFIX + job_id)


def is_subvolume(path: str) -> bool:
    """A directory with inode 256 on btrfs is a subvolume root (callers know it is btrfs)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_ino == SUBVOLUME_ROOT_INODE and os.path.isdir(path)


def subvolume_root(path: str) -> str:
    """Walk up from ``path`` to the root of the subvolume holding it.

    All of a subvolume shares one ``st_dev``; its root is the topmost directory with that
    device, and must have inode 256. Otherwise only a subdirectory of the subvolume is
    mounted here (a bind mount) and the snapshot could not be placed beside it.
    """
    device = os.stat(path).st_dev
    current = path if os.path.isdir(path) else os.path.dirname(path)
    while True:
        if os.stat(current).st_ino == SUBVOLUME_ROOT_INODE:
            return current
        parent = os.path.dirname(current)
        if parent == current or os.stat(parent).st_dev != device:
            raise SnapshotError(
                f"{path}: the root of its btrfs subvolume is not visible here "
                "(is a subdirectory bind-mounted?)"
            )
        current = parent


def nested_subvolumes(listing: str, mount: MountEntry | None) -> list[str]:
    """Absolute paths of the subvolumes in ``btrfs subvolume list -o`` output.

    The tool prints paths from the file system's top level; ``mount.root`` says which of
    them is mounted at ``mount.mount_point``. Subvolumes outside the mounted tree are skipped.
    """
    if mount is None:
        return []
    found = []
    root = mount.root.rstrip("/") or "/"
    for line in listing.splitlines():
        _, sep, relative = line.partition(" path ")
        if not sep:
            continue
        fs_path = "/" + relative.strip().removeprefix("<FS_TREE>/").lstrip("/")
        if within(fs_path, root):
            inside = os.path.relpath(fs_path, root)
            found.append(os.path.normpath(os.path.join(mount.mount_point, inside)))
    return found

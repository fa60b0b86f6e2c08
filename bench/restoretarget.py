"""A fresh ext4 file system for every restore, so no tool restores after another's deletion.

Why: on the shared benchmark disk (ext4 without a journal), ext4 will not reuse an inode
freed less than ~30 s ago and checks every such inode of a group on each allocation. The
benchmark deletes each tool's restored tree (78,579 files for ``source``), so the next tool's
restore paid for that deletion in system time: restore times swung 2-3x with the order of
the tools. That was the benchmark's doing, not the tools'.

So each restore goes into its own file system: a sparse image under the tool's work folder,
``mkfs.ext4`` with the inode tables and journal written at once (no ``ext4lazyinit`` thread
writing them during the timed restore), mounted on the restore target with ``mount -o loop``.
It is sized like a roomy disk (see :func:`plan_image`), because a tight one made restores wait
for the file system instead.
Making, mounting, unmounting and deleting it are untimed. It is unmounted and deleted after
the restore check, also on failure or Ctrl-C. Without root (or when making or mounting it
fails) the restore goes into a plain directory as before, with a printed note, and the
results record which kind of target each restore used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from datasets import FileEntry

BLOCK = 4096
MiB = 2**20
GiB = 2**30
IMAGE_NAME = "restore.img"
JOURNAL_MIB = 1024  # what mke2fs gives a file system of 128 GiB or more
MIN_IMAGE = 4 * GiB  # room for that journal (at most half the file system) and more
MKFS_OPTIONS = [
    "-q",
    "-F",
    "-m",
    "0",
    "-J",
    f"size={JOURNAL_MIB}",
    "-E",
    "lazy_itable_init=0,lazy_journal_init=0",
]
UMOUNT_TRIES = 10  # a tool killed by Ctrl-C may hold the file system a moment longer


@dataclass(frozen=True)
class ImagePlan:
    size_bytes: int
    inodes: int


def plan_image(entries: list[FileEntry]) -> ImagePlan:
    """Size and inode count of an image that holds the dataset like a roomy disk would.

    Every file takes whole 4 KiB blocks (``small``'s million 1 KiB files need 4 GB). The
    free space stays above three times the data: ext4 starts writing back, and makes writers
    wait for it, once its free space is under twice the data still waiting for delayed
    allocation (``ext4_nonda_switch``), which an image sized to the data made a restore of
    ``source`` do (``wb_wait_for_completion``), and the journal is 1 GiB, as mke2fs makes
    it for 128 GiB and more: the 64 MiB it gives a 2 GiB file system filled up during a
    restore (``jbd2_log_wait_commit``). The image is sparse: the room costs no disk space.
    ext4's default of one inode per 16 KiB would be too few for ``small``, so the inode
    count is set from the tree.
    """
    data = sum(-(-entry.size // BLOCK) * BLOCK for entry in entries)
    dirs = _directories(entries)
    inodes = 2 * (len(entries) + dirs) + 16384
    # plus metadata: 256-byte inodes, directory blocks, the journal
    size = 4 * data + inodes * 256 + dirs * 4 * BLOCK + (JOURNAL_MIB + 512) * MiB
    return ImagePlan(size_bytes=max(MIN_IMAGE, -(-size // MiB) * MiB), inodes=inodes)


def _directories(entries: list[FileEntry]) -> int:
    """Directories the restored tree has below the dataset root (each holds >= 1 file)."""
    found: set[str] = set()
    for entry in entries:
        parent = os.path.dirname(entry.rel)
        while parent and parent not in found:
            found.add(parent)
            parent = os.path.dirname(parent)
    return len(found)


def refusal() -> str | None:
    """Why no image can be mounted here (None: try it)."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        return "not root (mounting needs root)"
    missing = [tool for tool in ("mkfs.ext4", "mount", "umount") if _which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    return None


def _which(program: str) -> str | None:
    return shutil.which(program, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


Runner = Callable[[list[str]], None]


def _run(argv: list[str]) -> None:
    """Run a helper; CalledProcessError (with its stderr) when it fails."""
    program = _which(argv[0]) or argv[0]
    subprocess.run(
        [program, *argv[1:]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


@contextlib.contextmanager
def fresh_target(
    mountpoint: Path, plan: ImagePlan, log: Callable[[str], None], run: Runner = _run
) -> Iterator[str]:
    """Mount a new ext4 image on ``mountpoint`` (an empty directory) for one restore.

    Yields what the restore goes into ("ext4 image ..." or "directory ..."), for the results.
    """
    why_not = refusal()
    image = mountpoint.parent / IMAGE_NAME
    if why_not is None:
        why_not = _make_and_mount(image, mountpoint, plan, run)
    if why_not is not None:
        log(
            f"note: restoring into a plain directory, not a fresh ext4 file system ({why_not}); "
            "restore times then depend on what was deleted before on this disk"
        )
        yield f"directory ({why_not})"
        return
    try:
        yield f"ext4 image ({plan.size_bytes // MiB} MiB, {plan.inodes} inodes, sparse, loop)"
    finally:
        _unmount(mountpoint, log, run)
        image.unlink(missing_ok=True)


def _make_and_mount(image: Path, mountpoint: Path, plan: ImagePlan, run: Runner) -> str | None:
    """None when mounted, else why not (and nothing is left behind)."""
    try:
        with open(image, "wb") as handle:
            handle.truncate(plan.size_bytes)  # sparse
        run(["mkfs.ext4", *MKFS_OPTIONS, "-N", str(plan.inodes), str(image)])
        run(["mount", "-o", "loop", str(image), str(mountpoint)])
    except (OSError, subprocess.SubprocessError) as exc:
        image.unlink(missing_ok=True)
        return f"cannot make or mount the image: {_describe(exc)}"
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        detail = (exc.stderr or "").strip().splitlines()
        return f"{exc.cmd[0]} failed (exit {exc.returncode}){': ' + detail[-1] if detail else ''}"
    return str(exc)


def _unmount(mountpoint: Path, log: Callable[[str], None], run: Runner) -> None:
    for _ in range(UMOUNT_TRIES):
        try:
            run(["umount", str(mountpoint)])
            return
        except (OSError, subprocess.SubprocessError):
            time.sleep(0.5)  # busy: a stopped tool's files are still being closed
    log(f"note: {mountpoint} stayed busy; detached lazily (umount -l)")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run(["umount", "-l", str(mountpoint)])


def mounts_under(folder: Path, mountinfo: str) -> list[Path]:
    """Mount points at or below ``folder`` in a /proc/self/mountinfo text, deepest first."""
    found: list[Path] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = Path(_unescape(fields[4]))
        if point == folder or folder in point.parents:
            found.append(point)
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo octal escapes."""
    if "\\" not in field:
        return field
    raw = field.encode()
    out = bytearray()
    index = 0
    while index < len(raw):
        if raw[index : index + 1] == b"\\" and raw[index + 1 : index + 4].isdigit():
            out.append(int(raw[index + 1 : index + 4], 8))
            index += 4
        else:
            out.append(raw[index])
            index += 1
    return os.fsdecode(bytes(out))


def unmount_stale(folder: Path, log: Callable[[str], None], run: Runner = _run) -> None:
    """Unmount images a killed earlier run left mounted below ``folder``, before it is
    deleted (deleting it would otherwise walk into the mounted file systems)."""
    try:
        with open("/proc/self/mountinfo") as handle:
            text = handle.read()
    except OSError:
        return
    for point in mounts_under(folder.resolve(), text):  # mountinfo has resolved paths
        log(f"unmounting {point}, left mounted by an earlier run")
        _unmount(point, log, run)

"""Snapshot providers: exact command sequences (fake runner), fallback to live, exact job logs.

LVM and VSS cannot run here, so they are driven through a fake CommandRunner that records
every argv and answers from a script; the fake `mount`/`umount` also edit a fake mountinfo,
as the kernel would. Real btrfs is in tests/integration/test_btrfs_snapshot.py.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roost.agent.snapshots import default_providers
from roost.agent.snapshots.base import (
    CommandFailed,
    CommandResult,
    MountEntry,
    PreparedSnapshot,
    SnapshotError,
    SnapshotProvider,
    StateFile,
    SubprocessRunner,
    cleanup_all,
    mount_of,
    parse_mountinfo,
    prepare_snapshot,
    release_snapshot,
)
from roost.agent.snapshots.btrfs import BtrfsProvider, nested_subvolumes
from roost.agent.snapshots.live import LiveProvider
from roost.agent.snapshots.lvm import LvmProvider
from roost.agent.snapshots.vss import VssProvider, path_on_volume, volume_of

FALLBACK = "falling back to a live scan"

# --- a scripted CommandRunner --------------------------------------------------------------

Effect = Callable[[list[str]], None]


@dataclass
class Rule:
    prefix: list[str]
    result: CommandResult
    times: int | None  # None: any number of times
    effect: Effect | None


@dataclass
class FakeRunner:
    """Answers commands from rules (first matching rule with uses left); records every argv."""

    calls: list[list[str]] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)

    def on(
        self,
        *prefix: str,
        out: str = "",
        rc: int = 0,
        err: str = "",
        times: int | None = None,
        effect: Effect | None = None,
    ) -> FakeRunner:
        self.rules.append(Rule(list(prefix), CommandResult(rc, out, err), times, effect))
        return self

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 120) -> CommandResult:
        self.calls.append(list(argv))
        rule = next((r for r in self.rules if self._matches(r, argv)), None)
        if rule is None:
            raise AssertionError(f"unexpected command {argv}")
        if rule.times is not None:
            rule.times -= 1
        if rule.effect is not None:
            rule.effect(argv)
        if check and rule.result.returncode != 0:
            raise CommandFailed(argv, rule.result.returncode, rule.result.stderr)
        return rule.result

    @staticmethod
    def _matches(rule: Rule, argv: list[str]) -> bool:
        return argv[: len(rule.prefix)] == rule.prefix and rule.times != 0


# --- prepare_snapshot / release_snapshot with scripted providers ---------------------------


@dataclass
class ScriptedProvider:
    """A provider whose every step can be made to fail; records what was called."""

    name: str
    reason: str | None = None
    create_error: Exception | None = None
    validate_error: Exception | None = None
    delete_error: Exception | None = None
    calls: list[str] = field(default_factory=list)
    deleted: list[PreparedSnapshot] = field(default_factory=list)

    def unsupported_reason(self, paths: list[str]) -> str | None:
        self.calls.append("unsupported_reason")
        return self.reason

    def applicable(self, paths: list[str]) -> bool:
        return self.reason is None

    def create(self, paths: list[str], job_id: str) -> PreparedSnapshot:
        self.calls.append("create")
        if self.create_error:
            raise self.create_error
        read = {p: f"/snap/{job_id}{p}" for p in paths}
        log = [f"{self.name} snapshot h-{job_id} created"]
        return PreparedSnapshot(self.name, list(paths), read, [f"h-{job_id}"], log)

    def validate(self, snap: PreparedSnapshot) -> None:
        self.calls.append("validate")
        if self.validate_error:
            raise self.validate_error

    def delete(self, snap: PreparedSnapshot) -> None:
        self.calls.append("delete")
        self.deleted.append(snap)
        if self.delete_error:
            raise self.delete_error

    def cleanup_leftovers(self) -> list[str]:
        if self.delete_error:
            raise self.delete_error
        return [f"{self.name}-old"]


PATHS = ["/srv/a", "/srv/b"]
LIVE_PATHS = {"/srv/a": "/srv/a", "/srv/b": "/srv/b"}


def test_scripted_provider_satisfies_the_protocol() -> None:
    assert isinstance(ScriptedProvider("x"), SnapshotProvider)
    assert isinstance(LiveProvider(), SnapshotProvider)


def test_mode_never_reads_live_without_asking_providers() -> None:
    provider = ScriptedProvider("btrfs")
    snap = prepare_snapshot([provider], PATHS, "j1", "never")
    assert (snap.provider, snap.read_paths, snap.handles) == ("live", LIVE_PATHS, [])
    assert snap.log == ["snapshot mode is 'never'; using a live scan"]
    assert provider.calls == []


def test_unknown_mode_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown snapshot mode 'always'"):
        prepare_snapshot([], PATHS, "j1", "always")


def test_no_applicable_provider_logs_each_reason() -> None:
    btrfs = ScriptedProvider("btrfs", reason="/srv/a is on ext4, not btrfs")
    lvm = ScriptedProvider("lvm", reason="/srv/a is on /dev/sda1, not an LVM logical volume")
    snap = prepare_snapshot([btrfs, lvm], PATHS, "j1", "auto")
    assert snap.provider == "live" and snap.read_paths == LIVE_PATHS
    assert snap.log == [
        "btrfs snapshot not possible: /srv/a is on ext4, not btrfs",
        "lvm snapshot not possible: /srv/a is on /dev/sda1, not an LVM logical volume",
        f"no snapshot provider applies; {FALLBACK}",
    ]
    assert btrfs.calls == lvm.calls == ["unsupported_reason"]


def test_no_providers_at_all_reads_live() -> None:
    snap = prepare_snapshot([], PATHS, "j1", "auto")
    assert snap.provider == "live"
    assert snap.log == [f"no snapshot provider applies; {FALLBACK}"]


def test_a_crashing_probe_counts_as_not_applicable() -> None:
    class Broken(ScriptedProvider):
        def unsupported_reason(self, paths: list[str]) -> str | None:
            raise PermissionError("mountinfo unreadable")

    good = ScriptedProvider("lvm")
    snap = prepare_snapshot([Broken("btrfs"), good], PATHS, "j1", "auto")
    assert snap.provider == "lvm"
    assert snap.log[0] == "btrfs snapshot not possible: PermissionError: mountinfo unreadable"


def test_first_applicable_provider_snapshots_and_validates() -> None:
    first = ScriptedProvider("btrfs", reason="not btrfs")
    second = ScriptedProvider("lvm")
    third = ScriptedProvider("vss")
    snap = prepare_snapshot([first, second, third], PATHS, "j1", "auto")
    assert snap.provider == "lvm"
    assert snap.read_paths == {"/srv/a": "/snap/j1/srv/a", "/srv/b": "/snap/j1/srv/b"}
    assert snap.handles == ["h-j1"]
    assert snap.log == [
        "btrfs snapshot not possible: not btrfs",
        "lvm snapshot h-j1 created",
        "lvm snapshot validated; scanning it instead of the live files",
    ]
    assert second.calls == ["unsupported_reason", "create", "validate"]
    assert third.calls == []


def test_create_failure_falls_back_to_live_with_the_reason() -> None:
    provider = ScriptedProvider("btrfs", create_error=SnapshotError("no space left on device"))
    snap = prepare_snapshot([provider], PATHS, "j1", "auto")
    assert (snap.provider, snap.read_paths, snap.handles) == ("live", LIVE_PATHS, [])
    assert snap.log == [f"btrfs snapshot failed: no space left on device; {FALLBACK}"]
    assert provider.calls == ["unsupported_reason", "create"]  # nothing was made to delete


def test_foreign_create_errors_keep_their_type_in_the_log() -> None:
    provider = ScriptedProvider("btrfs", create_error=OSError(30, "Read-only file system"))
    snap = prepare_snapshot([provider], PATHS, "j1", "auto")
    assert snap.log == [
        f"btrfs snapshot failed: OSError: [Errno 30] Read-only file system; {FALLBACK}"
    ]


def test_validate_failure_deletes_the_half_made_snapshot_and_reads_live() -> None:
    error = SnapshotError("btrfs snapshot /srv/.roost-snap-j1 is not read-only (ro=false)")
    provider = ScriptedProvider("btrfs", validate_error=error)
    snap = prepare_snapshot([provider], PATHS, "j1", "auto")
    assert (snap.provider, snap.read_paths, snap.handles) == ("live", LIVE_PATHS, [])
    assert snap.log == [
        "btrfs snapshot h-j1 created",
        "btrfs snapshot failed validation: btrfs snapshot /srv/.roost-snap-j1 is not "
        f"read-only (ro=false); {FALLBACK}",
        "btrfs snapshot deleted: h-j1",
    ]
    assert provider.calls == ["unsupported_reason", "create", "validate", "delete"]
    assert provider.deleted[0].handles == []  # released: a second release does nothing
    assert provider.deleted[0].read_paths == {
        "/srv/a": "/snap/j1/srv/a",
        "/srv/b": "/snap/j1/srv/b",
    }


def test_validate_failure_whose_delete_also_fails_says_both() -> None:
    provider = ScriptedProvider(
        "lvm", validate_error=SnapshotError("invalid"), delete_error=SnapshotError("LV busy")
    )
    snap = prepare_snapshot([provider], PATHS, "j1", "auto")
    assert snap.provider == "live"
    assert snap.log == [
        "lvm snapshot h-j1 created",
        f"lvm snapshot failed validation: invalid; {FALLBACK}",
        "lvm snapshot delete failed: LV busy; the agent retries when it next starts",
    ]


def test_release_deletes_through_the_named_provider_once() -> None:
    btrfs, lvm = ScriptedProvider("btrfs"), ScriptedProvider("lvm")
    snap = prepare_snapshot([lvm], PATHS, "j1", "auto")
    assert release_snapshot([btrfs, lvm], snap) == ["lvm snapshot deleted: h-j1"]
    assert lvm.calls[-1] == "delete" and btrfs.calls == []
    assert release_snapshot([btrfs, lvm], snap) == []  # nothing left to delete
    assert lvm.calls.count("delete") == 1


def test_release_never_raises() -> None:
    failing = ScriptedProvider("vss", delete_error=RuntimeError("RPC server unavailable"))
    snap = prepare_snapshot([failing], PATHS, "j1", "auto")
    assert release_snapshot([failing], snap) == [
        "vss snapshot delete failed: RuntimeError: RPC server unavailable; "
        "the agent retries when it next starts"
    ]
    assert snap.handles == ["h-j1"]  # still owed: the leftover cleanup will get it
    assert release_snapshot([], snap) == [
        "cannot delete vss snapshot h-j1: no such provider on this agent"
    ]


def test_release_of_a_live_scan_is_silent() -> None:
    snap = prepare_snapshot([], PATHS, "j1", "never")
    assert release_snapshot([ScriptedProvider("btrfs")], snap) == []


def test_cleanup_all_reports_removals_and_failures() -> None:
    ok = ScriptedProvider("btrfs")
    bad = ScriptedProvider("lvm", delete_error=SnapshotError("lvs: command not found"))
    assert cleanup_all([ok, bad]) == [
        "removed leftover btrfs snapshot btrfs-old",
        "lvm leftover cleanup failed: lvs: command not found",
    ]


def test_live_provider_is_identity() -> None:
    live = LiveProvider()
    snap = live.create(PATHS, "j1")
    assert (snap.provider, snap.read_paths, snap.handles) == ("live", LIVE_PATHS, [])
    assert live.applicable(PATHS) and live.cleanup_leftovers() == []


# --- shared helpers ------------------------------------------------------------------------


def test_subprocess_runner_reports_output_and_failures() -> None:
    runner = SubprocessRunner()
    ok = runner.run(["sh", "-c", "printf 'out\\n'; printf 'err\\n' >&2"])
    assert ok == CommandResult(0, "out\n", "err\n")
    with pytest.raises(CommandFailed) as failed:
        runner.run(["sh", "-c", "echo 'ERROR: target exists' >&2; exit 3"])
    assert str(failed.value) == (
        "`sh -c 'echo '\"'\"'ERROR: target exists'\"'\"' >&2; exit 3'` "
        "exited 3: ERROR: target exists"
    )
    assert (failed.value.returncode, failed.value.stderr) == (3, "ERROR: target exists\n")
    unchecked = runner.run(["sh", "-c", "exit 5"], check=False)
    assert unchecked.returncode == 5


def test_subprocess_runner_maps_missing_program_and_timeout() -> None:
    runner = SubprocessRunner()
    missing = runner.run(["roost-no-such-program"], check=False)
    assert missing == CommandResult(127, "", "roost-no-such-program: command not found")
    with pytest.raises(CommandFailed, match=r"exited 124: timed out after 0\.2 s"):
        runner.run(["sleep", "5"], timeout=0.2)


def test_parse_mountinfo_handles_optional_fields_and_escapes() -> None:
    text = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:39 /@data /srv/my\\040share rw master:3 shared:9 - btrfs /dev/sdb rw\n"
        "41 22 253:2 / /srv ro - xfs /dev/mapper/vg0-srv ro\n"
        "42 22 253:3 / /srv rw - xfs /dev/mapper/vg0-over rw\n"
    )
    entries = parse_mountinfo(text)
    assert entries[1] == MountEntry(
        "/srv/my share", "/@data", "btrfs", "/dev/sdb", frozenset({"rw"})
    )
    assert mount_of(entries, "/srv/my share/x") == entries[1]
    assert mount_of(entries, "/srv/other") == entries[3]  # stacked: the last mount is visible
    assert mount_of(entries, "/srvx") == entries[0]  # a prefix of the name is not a parent
    assert mount_of(entries, "/") == entries[0]


def test_state_file_round_trip_and_corruption(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "s" / "x.json")
    assert state.entries() == []
    state.add("a")
    state.add("b")
    state.add("a")
    state.remove("b")
    assert state.entries() == ["a"]
    assert json.loads(state.path.read_text()) == {"version": 1, "entries": ["a"]}
    state.path.write_text("{not json")
    with pytest.raises(SnapshotError, match=r"x\.json is unreadable .*remove leftover"):
        state.entries()


def test_default_providers_by_platform(tmp_path: Path) -> None:
    runner = FakeRunner()
    assert [p.name for p in default_providers(tmp_path, runner, platform="linux")] == [
        "btrfs",
        "lvm",
    ]
    assert [p.name for p in default_providers(tmp_path, runner, platform="win32")] == ["vss"]
    assert default_providers(tmp_path, runner, platform="darwin") == []
    assert runner.calls == []  # choosing providers runs nothing


def test_nested_subvolume_listing_maps_to_mounted_paths() -> None:
    listing = (
        "ID 257 gen 7 top level 256 path data/d/inner\n"
        "ID 259 gen 9 top level 256 path <FS_TREE>/data/.roost-snap-j\n"
        "ID 260 gen 9 top level 5 path other/x\n"
    )
    top = MountEntry("/mnt", "/", "btrfs", "/dev/loop0", frozenset({"rw"}))
    sub = MountEntry("/srv/data", "/data", "btrfs", "/dev/loop0", frozenset({"rw"}))
    assert nested_subvolumes(listing, top) == [
        "/mnt/data/d/inner",
        "/mnt/data/.roost-snap-j",
        "/mnt/other/x",
    ]
    assert nested_subvolumes(listing, sub) == ["/srv/data/d/inner", "/srv/data/.roost-snap-j"]
    assert nested_subvolumes(listing, None) == []


def test_btrfs_is_not_applicable_off_btrfs(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    provider = BtrfsProvider(FakeRunner(), tmp_path / "state", mountinfo=info)
    assert provider.unsupported_reason([str(tmp_path)]) == f"{tmp_path} is on ext4, not btrfs"
    assert (
        provider.unsupported_reason([str(tmp_path / "gone")]) == f"{tmp_path}/gone does not exist"
    )
    assert not provider.applicable([str(tmp_path)])


def test_job_ids_that_could_escape_a_name_are_refused(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("22 1 8:1 / / rw - btrfs /dev/sda1 rw\n")
    provider = BtrfsProvider(FakeRunner(), tmp_path / "state", mountinfo=info)
    with pytest.raises(SnapshotError, match=r"job id '\.\./x' is not usable"):
        provider.create([str(tmp_path)], "../x")


# --- LVM through the fake runner -----------------------------------------------------------


class FakeKernel:
    """A mountinfo file that the fake `mount` and `umount` commands edit."""

    def __init__(self, path: Path, lines: list[str]) -> None:
        self.path = path
        self.lines = list(lines)
        self._write()

    def mount(self, argv: list[str], fstype: str = "ext4", make: tuple[str, ...] = ()) -> None:
        options, device, target = argv[2], argv[3], argv[4]
        self.lines.append(f"90 22 253:9 / {target} {options} - {fstype} {device} {options}")
        for relative in make:  # what the snapshot file system contains
            (Path(target) / relative).mkdir(parents=True, exist_ok=True)
        self._write()

    def umount(self, argv: list[str]) -> None:
        self.lines = [line for line in self.lines if f" {argv[1]} " not in line]
        for child in Path(argv[1]).iterdir():  # the snapshot's files vanish with the mount
            shutil.rmtree(child)
        self._write()

    def _write(self) -> None:
        self.path.write_text("".join(line + "\n" for line in self.lines))


@pytest.fixture
def lvm_world(tmp_path: Path) -> tuple[Path, Path, FakeKernel]:
    root = tmp_path.resolve()
    srv = root / "srv"
    (srv / "shares" / "a").mkdir(parents=True)
    kernel = FakeKernel(
        root / "mountinfo",
        [
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
            f"36 22 253:1 / {srv} rw,relatime shared:2 - ext4 /dev/mapper/vg0-data rw",
        ],
    )
    return root, srv, kernel


def _lvm(root: Path, runner: FakeRunner, kernel: FakeKernel, **kw: float) -> LvmProvider:
    return LvmProvider(runner, root / "state", root / "mnt", mountinfo=kernel.path, **kw)


def _lvm_script(runner: FakeRunner, kernel: FakeKernel, attr: str = "swi-aos---") -> FakeRunner:
    return (
        runner.on("lvs", "--noheadings", "-o", "vg_name,lv_name", out="  vg0 data\n")
        .on("lvs", "--noheadings", "--nosuffix", out="  10737418240\n")
        .on("lvcreate")
        .on("mount", effect=lambda argv: kernel.mount(argv, make=("shares/a",)))
        .on("lvs", "--noheadings", "-o", "lv_attr", out=f"  {attr}\n")
        .on("umount", effect=kernel.umount)
        .on("lvremove")
    )


def test_lvm_snapshot_full_cycle_exact_commands(
    lvm_world: tuple[Path, Path, FakeKernel],
) -> None:
    root, srv, kernel = lvm_world
    runner = _lvm_script(FakeRunner(), kernel)
    lvm = _lvm(root, runner, kernel)
    source = str(srv / "shares" / "a")
    snap = prepare_snapshot([lvm], [source], "job7", "auto")
    mount_point = root / "mnt" / "job7"
    assert snap.provider == "lvm"
    assert snap.read_paths == {source: str(mount_point / "shares" / "a")}
    assert snap.handles == ["vg0/roost-snap-job7"]
    assert json.loads((root / "state" / "lvm-snapshots.json").read_text())["entries"] == [
        "vg0/roost-snap-job7"
    ]
    assert snap.log == [
        "LVM snapshot vg0/roost-snap-job7 of vg0/data created (1073741824 bytes COW space)",
        f"LVM snapshot vg0/roost-snap-job7 mounted read-only at {mount_point}",
        "lvm snapshot validated; scanning it instead of the live files",
    ]
    assert release_snapshot([lvm], snap) == ["lvm snapshot deleted: vg0/roost-snap-job7"]
    device_lvs = ["lvs", "--noheadings", "-o", "vg_name,lv_name", "/dev/mapper/vg0-data"]
    assert runner.calls == [
        device_lvs,  # applicable
        device_lvs,  # create
        ["lvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "lv_size", "vg0/data"],
        ["lvcreate", "-s", "-n", "roost-snap-job7", "-L", "1073741824b", "vg0/data"],
        ["mount", "-o", "ro", "/dev/vg0/roost-snap-job7", str(mount_point)],
        ["lvs", "--noheadings", "-o", "lv_attr", "vg0/roost-snap-job7"],
        ["umount", str(mount_point)],
        ["lvremove", "-f", "vg0/roost-snap-job7"],
    ]
    assert not mount_point.exists()
    assert StateFile(root / "state" / "lvm-snapshots.json").entries() == []


def test_lvm_xfs_bind_mount_several_volumes_and_size_rounding(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "exports" / "team").mkdir(parents=True)
    (root / "home" / "u").mkdir(parents=True)
    kernel = FakeKernel(
        root / "mountinfo",
        [
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw",
            f"36 22 253:1 /srv/exports {root}/exports rw - xfs /dev/mapper/vg0-srv rw",
            f"37 22 253:2 / {root}/home rw - ext4 /dev/vg1/home rw",
        ],
    )
    runner = (
        FakeRunner()
        .on("lvs", "--noheadings", "-o", "vg_name,lv_name", "/dev/mapper/vg0-srv", out="vg0 srv")
        .on("lvs", "--noheadings", "-o", "vg_name,lv_name", "/dev/vg1/home", out="vg1 home")
        .on("lvs", "--noheadings", "--nosuffix", out="1000\n")
        .on("lvcreate")
        .on("mount")
    )
    lvm = _lvm(root, runner, kernel, snapshot_percent=15)
    paths = [f"{root}/exports/team", f"{root}/home/u", f"{root}/exports"]
    snap = lvm.create(paths, "j9")
    assert snap.handles == ["vg0/roost-snap-j9", "vg1/roost-snap-j9-1"]
    assert snap.read_paths == {
        f"{root}/exports/team": f"{root}/mnt/j9/srv/exports/team",  # mount root kept
        f"{root}/home/u": f"{root}/mnt/j9-1/u",
        f"{root}/exports": f"{root}/mnt/j9/srv/exports",
    }
    assert [c for c in runner.calls if c[0] in ("lvcreate", "mount")] == [
        ["lvcreate", "-s", "-n", "roost-snap-j9", "-L", "512b", "vg0/srv"],  # 150 B -> 1 sector
        ["mount", "-o", "ro,nouuid", "/dev/vg0/roost-snap-j9", f"{root}/mnt/j9"],
        ["lvcreate", "-s", "-n", "roost-snap-j9-1", "-L", "512b", "vg1/home"],
        ["mount", "-o", "ro", "/dev/vg1/roost-snap-j9-1", f"{root}/mnt/j9-1"],
    ]


def test_lvm_invalid_snapshot_falls_back_and_is_removed(
    lvm_world: tuple[Path, Path, FakeKernel],
) -> None:
    root, srv, kernel = lvm_world
    runner = _lvm_script(FakeRunner(), kernel, attr="swi-Ios---")
    lvm = _lvm(root, runner, kernel)
    snap = prepare_snapshot([lvm], [str(srv)], "job8", "auto")
    assert (snap.provider, snap.read_paths) == ("live", {str(srv): str(srv)})
    assert snap.log[2:] == [
        "lvm snapshot failed validation: LVM snapshot vg0/roost-snap-job8 is invalid (lv_attr "
        "swi-Ios---): its copy-on-write space overflowed; raise the snapshot size; "
        f"{FALLBACK}",
        "lvm snapshot deleted: vg0/roost-snap-job8",
    ]
    assert runner.calls[-2:] == [
        ["umount", str(root / "mnt" / "job8")],
        ["lvremove", "-f", "vg0/roost-snap-job8"],
    ]
    assert kernel.lines[-1].endswith("/dev/mapper/vg0-data rw")  # unmounted


def test_lvm_writable_mount_fails_validation(lvm_world: tuple[Path, Path, FakeKernel]) -> None:
    root, srv, kernel = lvm_world
    runner = _lvm_script(FakeRunner(), kernel)
    runner.rules[3].effect = lambda argv: kernel.mount(["mount", "-o", "rw", *argv[3:]])
    snap = prepare_snapshot([_lvm(root, runner, kernel)], [str(srv)], "j", "auto")
    assert snap.provider == "live"
    assert f"LVM snapshot vg0/roost-snap-j is mounted writable at {root}/mnt/j" in snap.log[2]


def test_lvm_failed_mount_rolls_back_the_new_lv(lvm_world: tuple[Path, Path, FakeKernel]) -> None:
    root, srv, kernel = lvm_world
    runner = (
        FakeRunner()
        .on("lvs", "--noheadings", "-o", "vg_name,lv_name", out="vg0 data\n")
        .on("lvs", "--noheadings", "--nosuffix", out="10737418240\n")
        .on("lvcreate")
        .on("mount", rc=32, err="mount: wrong fs type, bad option, bad superblock\n")
        .on("lvremove")
    )
    snap = prepare_snapshot([_lvm(root, runner, kernel)], [str(srv)], "j2", "auto")
    assert snap.provider == "live"
    mount_point = root / "mnt" / "j2"
    assert snap.log == [
        "LVM snapshot vg0/roost-snap-j2 of vg0/data created (1073741824 bytes COW space)",
        f"lvm snapshot failed: `mount -o ro /dev/vg0/roost-snap-j2 {mount_point}` exited 32: "
        f"mount: wrong fs type, bad option, bad superblock; {FALLBACK}",
        "lvm partial snapshot removed: vg0/roost-snap-j2",
    ]
    assert runner.calls[-1] == ["lvremove", "-f", "vg0/roost-snap-j2"]  # not mounted: no umount
    assert StateFile(root / "state" / "lvm-snapshots.json").entries() == []


def test_lvm_failed_lvcreate_leaves_no_record(lvm_world: tuple[Path, Path, FakeKernel]) -> None:
    root, srv, kernel = lvm_world
    runner = (
        FakeRunner()
        .on("lvs", "--noheadings", "-o", "vg_name,lv_name", out="vg0 data\n")
        .on("lvs", "--noheadings", "--nosuffix", out="10737418240\n")
        .on("lvcreate", rc=5, err='  Volume group "vg0" has insufficient free space.\n')
    )
    snap = prepare_snapshot([_lvm(root, runner, kernel)], [str(srv)], "j3", "auto")
    assert snap.log == [
        "lvm snapshot failed: `lvcreate -s -n roost-snap-j3 -L 1073741824b vg0/data` exited 5: "
        f'Volume group "vg0" has insufficient free space.; {FALLBACK}'
    ]
    assert runner.calls[-1][0] == "lvcreate"
    assert StateFile(root / "state" / "lvm-snapshots.json").entries() == []


def test_lvm_not_applicable_reasons(lvm_world: tuple[Path, Path, FakeKernel]) -> None:
    root, srv, kernel = lvm_world
    runner = FakeRunner().on("lvs", rc=5, err="  Failed to find logical volume\n")
    lvm = _lvm(root, runner, kernel)
    assert lvm.unsupported_reason([str(srv)]) == (
        f"{srv} is on /dev/mapper/vg0-data, not an LVM logical volume"
    )
    kernel.lines.append(f"50 22 0:40 / {srv} rw - btrfs /dev/mapper/vg0-data rw")
    kernel._write()
    assert lvm.unsupported_reason([str(srv)]) == (
        f"{srv} is on btrfs; a block copy of a mounted btrfs must not be mounted"
    )
    kernel.lines.append(f"51 22 0:41 / {srv} rw - nfs4 srv:/export rw")
    kernel._write()
    assert lvm.unsupported_reason([str(srv)]) == f"{srv} is on nfs4, not ext2/3/4 or xfs"
    assert len(runner.calls) == 1  # only the first probe needed lvs


def test_lvm_cleanup_leftovers(lvm_world: tuple[Path, Path, FakeKernel]) -> None:
    root, _, kernel = lvm_world
    StateFile(root / "state" / "lvm-snapshots.json").add("vg0/roost-snap-old")
    (root / "mnt" / "old").mkdir(parents=True)
    kernel.lines.append(f"91 22 253:9 / {root}/mnt/old ro - ext4 /dev/vg0/roost-snap-old ro")
    kernel._write()
    listing = "  vg0 data\n  vg0 roost-snap-old\n  vg1 roost-snap-other-1\n  vg1 home\n"
    runner = (
        FakeRunner()
        .on("umount", effect=kernel.umount)
        .on("lvs", "--noheadings", "-o", "vg_name,lv_name", out=listing)
        .on("lvremove")
    )
    lvm = _lvm(root, runner, kernel)
    assert lvm.cleanup_leftovers() == ["vg0/roost-snap-old", "vg1/roost-snap-other-1"]
    assert runner.calls == [
        ["umount", f"{root}/mnt/old"],
        ["lvs", "--noheadings", "-o", "vg_name,lv_name"],
        ["lvremove", "-f", "vg0/roost-snap-old"],
        ["lvremove", "-f", "vg1/roost-snap-other-1"],
    ]
    assert not (root / "mnt" / "old").exists()
    assert StateFile(root / "state" / "lvm-snapshots.json").entries() == []
    runner.calls.clear()
    assert lvm.cleanup_leftovers() == [] and runner.calls == []  # nothing recorded: no lvs


# --- VSS through the fake runner -----------------------------------------------------------

ID_C = "{11111111-2222-3333-4444-555555555555}"
ID_D = "{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}"
DEV_C = "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy7"
DEV_D = "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy8"
PS = ["powershell", "-NoProfile", "-NonInteractive", "-Command"]


def sc_state(state: str) -> str:
    code = {"STOPPED": 1, "START_PENDING": 2, "RUNNING": 4}[state]
    return (
        "\r\nSERVICE_NAME: VSS \r\n        TYPE               : 10  WIN32_OWN_PROCESS  \r\n"
        f"        STATE              : {code}  {state} \r\n"
        "        WIN32_EXIT_CODE    : 0  (0x0)\r\n"
    )


def create_ps(volume: str) -> list[str]:
    return [
        *PS,
        f"$r = (Get-WmiObject -List Win32_ShadowCopy).Create('{volume}', 'ClientAccessible'); "
        '"ReturnValue=$($r.ReturnValue)"; "ShadowID=$($r.ShadowID)"',
    ]


def device_ps(shadow_id: str) -> list[str]:
    return [
        *PS,
        f"(Get-WmiObject Win32_ShadowCopy | Where-Object {{ $_.ID -eq '{shadow_id}' }})"
        ".DeviceObject",
    ]


def list_cmd(shadow_id: str) -> list[str]:
    return ["vssadmin", "list", "shadows", f"/shadow={shadow_id}"]


def delete_cmd(shadow_id: str) -> list[str]:
    return ["vssadmin", "delete", "shadows", f"/shadow={shadow_id}", "/quiet"]


def listed(shadow_id: str) -> str:
    return f"Contents of shadow copy set ID: {{x}}\r\n   Shadow Copy ID: {shadow_id}\r\n"


@dataclass
class VssWorld:
    runner: FakeRunner
    sleeps: list[float]
    existing: set[str]
    state_dir: Path

    def provider(self) -> VssProvider:
        return VssProvider(
            self.runner,
            self.state_dir,
            sleep=self.sleeps.append,
            start_timeout=3,
            poll_interval=1,
            path_exists=self.existing.__contains__,
        )


@pytest.fixture
def vss(tmp_path: Path) -> VssWorld:
    return VssWorld(FakeRunner(), [], set(), tmp_path / "state")


def _shadow_rules(runner: FakeRunner, volume: str, shadow_id: str, device: str) -> None:
    runner.on(*create_ps(volume), out=f"ReturnValue=0\r\nShadowID={shadow_id}\r\n")
    runner.on(*device_ps(shadow_id), out=device + "\r\n")
    runner.on(*list_cmd(shadow_id), out=listed(shadow_id))
    runner.on(*delete_cmd(shadow_id), out="Successfully deleted the shadow copy.\r\n")


def test_vss_two_volumes_exact_commands_and_paths(vss: VssWorld) -> None:
    vss.runner.on("sc", "query", "VSS", out=sc_state("RUNNING"))
    _shadow_rules(vss.runner, "C:\\", ID_C, DEV_C)
    _shadow_rules(vss.runner, "D:\\", ID_D, DEV_D)
    paths = ["C:\\data\\x", "d:/Shares/Team", "C:\\"]
    vss.existing |= {DEV_C + "\\data\\x", DEV_D + "\\Shares\\Team", DEV_C + "\\"}
    provider = vss.provider()
    snap = prepare_snapshot([provider], paths, "job1", "auto")
    assert snap.provider == "vss"
    assert snap.read_paths == {
        "C:\\data\\x": DEV_C + "\\data\\x",
        "d:/Shares/Team": DEV_D + "\\Shares\\Team",
        "C:\\": DEV_C + "\\",
    }
    assert snap.handles == [ID_C, ID_D]
    assert snap.log == [
        f"VSS shadow copy {ID_C} of C:\\ created ({DEV_C})",
        f"VSS shadow copy {ID_D} of D:\\ created ({DEV_D})",
        "vss snapshot validated; scanning it instead of the live files",
    ]
    assert StateFile(vss.state_dir / "vss-shadows.json").entries() == [ID_C, ID_D]
    assert release_snapshot([provider], snap) == [f"vss snapshot deleted: {ID_C}, {ID_D}"]
    assert vss.runner.calls == [
        ["sc", "query", "VSS"],
        create_ps("C:\\"),
        device_ps(ID_C),
        create_ps("D:\\"),
        device_ps(ID_D),
        list_cmd(ID_C),
        list_cmd(ID_D),
        delete_cmd(ID_C),
        delete_cmd(ID_D),
    ]
    assert StateFile(vss.state_dir / "vss-shadows.json").entries() == []
    assert vss.sleeps == []


def test_vss_starts_a_stopped_service_and_waits_for_it(vss: VssWorld) -> None:
    vss.runner.on("sc", "query", "VSS", out=sc_state("STOPPED"), times=1)
    vss.runner.on("sc", "start", "VSS", out="SERVICE_NAME: VSS\r\n  STATE : 2  START_PENDING\r\n")
    vss.runner.on("sc", "query", "VSS", out=sc_state("START_PENDING"), times=1)
    vss.runner.on("sc", "query", "VSS", out=sc_state("RUNNING"))
    _shadow_rules(vss.runner, "C:\\", ID_C, DEV_C)
    vss.existing.add(DEV_C + "\\data")
    snap = prepare_snapshot([vss.provider()], ["C:\\data"], "job2", "auto")
    assert snap.provider == "vss"
    assert snap.log == [
        "VSS service was stopped; started it",
        f"VSS shadow copy {ID_C} of C:\\ created ({DEV_C})",
        "vss snapshot validated; scanning it instead of the live files",
    ]
    assert vss.runner.calls[:5] == [
        ["sc", "query", "VSS"],
        ["sc", "start", "VSS"],
        ["sc", "query", "VSS"],
        ["sc", "query", "VSS"],
        create_ps("C:\\"),
    ]
    assert vss.sleeps == [1]


def test_vss_service_that_never_starts_falls_back(vss: VssWorld) -> None:
    vss.runner.on("sc", "query", "VSS", out=sc_state("STOPPED"), times=1)
    vss.runner.on("sc", "start", "VSS")
    vss.runner.on("sc", "query", "VSS", out=sc_state("START_PENDING"))
    snap = prepare_snapshot([vss.provider()], ["C:\\data"], "job2", "auto")
    assert snap.log == [
        f"vss snapshot failed: the VSS service did not start (still START_PENDING); {FALLBACK}"
    ]
    assert vss.sleeps == [1, 1, 1]


def test_vss_disabled_service_reports_why(vss: VssWorld) -> None:
    vss.runner.on("sc", "query", "VSS", out=sc_state("STOPPED"))
    vss.runner.on(
        "sc",
        "start",
        "VSS",
        rc=1058,
        out="[SC] StartService FAILED 1058:\r\n\r\nThe service cannot be started, either "
        "because it is disabled or because it has no enabled devices associated with it.\r\n",
    )
    snap = prepare_snapshot([vss.provider()], ["C:\\data"], "job2", "auto")
    assert snap.log == [
        "vss snapshot failed: could not start the VSS service: [SC] StartService FAILED 1058:; "
        "The service cannot be started, either because it is disabled or because it has no "
        f"enabled devices associated with it.; {FALLBACK}"
    ]


def test_vss_failing_create_falls_back_with_reason(vss: VssWorld) -> None:
    vss.runner.on("sc", "query", "VSS", out=sc_state("STOPPED"), times=1)
    vss.runner.on("sc", "start", "VSS")
    vss.runner.on("sc", "query", "VSS", out=sc_state("RUNNING"))
    vss.runner.on(*create_ps("C:\\"), out="ReturnValue=6\r\nShadowID=\r\n")
    snap = prepare_snapshot([vss.provider()], ["C:\\data"], "job3", "auto")
    assert (snap.provider, snap.read_paths, snap.handles) == ("live", {"C:\\data": "C:\\data"}, [])
    assert snap.log == [
        "VSS service was stopped; started it",
        "vss snapshot failed: VSS could not shadow-copy C:\\: insufficient storage for the "
        f"shadow copy; {FALLBACK}",
    ]
    assert StateFile(vss.state_dir / "vss-shadows.json").entries() == []


def test_vss_failure_on_second_volume_deletes_the_first(vss: VssWorld) -> None:
    vss.runner.on("sc", "query", "VSS", out=sc_state("RUNNING"))
    _shadow_rules(vss.runner, "C:\\", ID_C, DEV_C)
    vss.runner.on(*create_ps("E:\\"), rc=1, err="Get-WmiObject : Access denied\r\n")
    snap = prepare_snapshot([vss.provider()], ["C:\\a", "E:\\b"], "job4", "auto")
    assert snap.provider == "live"
    assert snap.log[0] == f"VSS shadow copy {ID_C} of C:\\ created ({DEV_C})"
    assert snap.log[1].startswith("vss snapshot failed: `powershell -NoProfile")
    assert snap.log[1].endswith(f"exited 1: Get-WmiObject : Access denied; {FALLBACK}")
    assert snap.log[2] == f"vss partial snapshot removed: {ID_C}"
    assert vss.runner.calls[-1] == delete_cmd(ID_C)
    assert StateFile(vss.state_dir / "vss-shadows.json").entries() == []


def test_vss_unlisted_shadow_fails_validation_and_is_deleted(vss: VssWorld) -> None:
    vss.runner.on("sc", "query", "VSS", out=sc_state("RUNNING"))
    _shadow_rules(vss.runner, "C:\\", ID_C, DEV_C)
    vss.runner.rules.insert(
        0, Rule(list_cmd(ID_C), CommandResult(0, "No items found.", ""), 1, None)
    )
    snap = prepare_snapshot([vss.provider()], ["C:\\a"], "job5", "auto")
    assert snap.provider == "live"
    assert snap.log[1:] == [
        f"vss snapshot failed validation: VSS shadow copy {ID_C} is not listed by vssadmin; "
        f"{FALLBACK}",
        f"vss snapshot deleted: {ID_C}",
    ]
    assert vss.runner.calls[-2:] == [list_cmd(ID_C), delete_cmd(ID_C)]


def test_vss_source_missing_inside_the_shadow_fails_validation(vss: VssWorld) -> None:
    vss.runner.on("sc", "query", "VSS", out=sc_state("RUNNING"))
    _shadow_rules(vss.runner, "C:\\", ID_C, DEV_C)
    snap = prepare_snapshot([vss.provider()], ["C:\\gone"], "job6", "auto")
    assert snap.log[1] == (
        f"vss snapshot failed validation: C:\\gone is absent from the shadow copy "
        f"(no {DEV_C}\\gone); {FALLBACK}"
    )


def test_vss_unc_paths_read_live_with_the_reason(vss: VssWorld) -> None:
    snap = prepare_snapshot([vss.provider()], ["C:\\a", "\\\\filer\\share\\x"], "j", "auto")
    assert snap.provider == "live"
    assert snap.log == [
        "vss snapshot not possible: UNC paths cannot be shadow-copied (\\\\filer\\share\\x)",
        f"no snapshot provider applies; {FALLBACK}",
    ]
    assert vss.runner.calls == []


@pytest.mark.parametrize(
    ("path", "volume", "inside"),
    [
        ("C:\\data\\x", "C:\\", "\\data\\x"),
        ("c:/data/./y/../x", "C:\\", "\\data\\x"),
        ("\\\\?\\D:\\long\\path", "D:\\", "\\long\\path"),
        ("E:\\", "E:\\", "\\"),
    ],
)
def test_vss_volume_and_path_mapping(path: str, volume: str, inside: str) -> None:
    assert volume_of(path) == volume
    assert path_on_volume(path) == inside


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("\\\\srv\\share\\x", "UNC paths cannot be shadow-copied"),
        ("//srv/share/x", "UNC paths cannot be shadow-copied"),
        ("\\\\?\\UNC\\srv\\share\\x", "UNC paths cannot be shadow-copied"),
        ("C:relative", "is not an absolute path on a drive letter"),
        ("\\rootless", "is not an absolute path on a drive letter"),
    ],
)
def test_vss_refuses_paths_without_a_local_volume(path: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=re.escape(message)):
        volume_of(path)


def test_vss_cleanup_leftovers(vss: VssWorld) -> None:
    state = StateFile(vss.state_dir / "vss-shadows.json")
    gone = "{99999999-9999-9999-9999-999999999999}"
    for shadow_id in (ID_C, gone, ID_D):
        state.add(shadow_id)
    vss.runner.on(*delete_cmd(ID_C))
    vss.runner.on(*delete_cmd(gone), rc=2, out="Error: No shadow copies were found.\r\n")
    vss.runner.on(*list_cmd(gone), rc=2, out="No items found that satisfy the query.\r\n")
    vss.runner.on(*delete_cmd(ID_D), rc=1, out="Error: the shadow copy is in use.\r\n")
    vss.runner.on(*list_cmd(ID_D), out=listed(ID_D))
    with pytest.raises(SnapshotError) as failed:
        vss.provider().cleanup_leftovers()
    assert str(failed.value) == (
        f"removed ['{ID_C}']; failed: {ID_D}: Error: the shadow copy is in use."
    )
    assert state.entries() == [ID_D]  # retried at the next start
    assert vss.runner.calls == [
        delete_cmd(ID_C),
        delete_cmd(gone),
        list_cmd(gone),
        delete_cmd(ID_D),
        list_cmd(ID_D),
    ]


def test_vss_cleanup_returns_what_it_removed(vss: VssWorld) -> None:
    StateFile(vss.state_dir / "vss-shadows.json").add(ID_C)
    vss.runner.on(*delete_cmd(ID_C))
    assert vss.provider().cleanup_leftovers() == [ID_C]
    assert vss.provider().cleanup_leftovers() == []

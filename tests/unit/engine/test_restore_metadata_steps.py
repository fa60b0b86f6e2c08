"""Restore leaves out fchown and fchmod only where a new file already has that owner and mode.

The restorer creates a file with its final mode, and skips ``fchown``/``fchmod``, when its
directory shows that new files get exactly this process's uid, gid and ``mode & ~umask``
(``plaincreate.creates_plainly``). These tests restore files whose wanted metadata differs from
what creation gives (another umask, group-writable and setuid modes, foreign owners, a setgid
target, a default ACL) and check every file ends up exactly as wanted, through threads and
worker processes; and that the skipping does happen where it may.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import treegen

from roost.engine import fsmeta, plaincreate, restore_dispatch, restore_jobs
from roost.engine.archiver import Archiver
from roost.engine.keys import KdfParams
from roost.engine.repository import Repository
from roost.engine.restorer import Restorer
from roost.engine.snapshot import Snapshot
from roost.errors import CorruptObject
from roost.storage.local import LocalBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (owners, mode 0000)")

MODES = {
    "plain": 0o644,
    "group_writable": 0o664,  # more than umask 022 lets through
    "world_writable": 0o666,
    "private": 0o600,
    "read_only": 0o444,
    "exec": 0o755,
    "setuid": 0o4755,
    "setgid": 0o2755,
    "sticky": 0o1644,
    **({"none": 0o000} if ROOT else {}),  # unreadable for the backup without root
}
# (uid, gid) of files owned by ids that have no passwd entry here, and by root
OWNERS = {"foreign": (1234, 5678), "foreign_group": (0, 5678), "foreign_user": (1234, 0)}


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    repository, _ = Repository.init(LocalBackend(tmp_path / "repo"), "pw", kdf=WEAK)
    return repository


@pytest.fixture(params=[0, 2], ids=["threads", "processes"])
def processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(restore_dispatch, "PROCESS_MIN_FILES", 0)  # workers from the start
    value: int = request.param
    return value


@pytest.fixture()
def umask() -> Iterator[None]:
    before = os.umask(0o022)
    yield
    os.umask(before)


def _tree(root: Path) -> Path:
    """A directory of files with the MODES (root-owned) and, as root, the OWNERS."""
    folder = root / "tree"
    folder.mkdir(parents=True)
    for name, mode in MODES.items():
        path = folder / name
        path.write_bytes(name.encode() * 10)
        os.chmod(path, mode)
    if ROOT:
        for name, (uid, gid) in OWNERS.items():
            path = folder / f"owned_{name}"
            path.write_bytes(b"theirs")
            os.chown(path, uid, gid)
            os.chmod(path, 0o640)
    return folder


def _restore(repo: Repository, snap: Snapshot, target: Path, processes: int) -> Path:
    summary = Restorer(repo, snap, target, processes=processes).run()
    assert summary.warnings == []
    return target


def _metadata(folder: Path) -> dict[str, tuple[int, int, int, int, int]]:
    found = {}
    for entry in sorted(os.listdir(folder)):
        st = os.lstat(folder / entry)
        found[entry] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_atime_ns)
    return found


@pytest.mark.parametrize("restore_umask", [0o022, 0o077, 0o002, 0o000])
def test_every_mode_and_owner_is_exact_whatever_the_umask(
    tmp_path: Path, repo: Repository, processes: int, umask: None, restore_umask: int
) -> None:
    src = _tree(tmp_path / "src")
    want = _metadata(src)  # read before the backup reads the files (atimes)
    snap, _ = Archiver(repo).run([str(src)])
    os.umask(restore_umask)
    target = _restore(repo, snap, tmp_path / "restore", processes)
    got = _metadata(target / src.relative_to("/"))
    assert {name: oct(v[0]) for name, v in got.items()} == {
        name: oct(v[0]) for name, v in want.items()
    }
    assert got == want


@needs_root
def test_a_setgid_target_of_another_group_does_not_fool_the_owner_skip(
    tmp_path: Path, repo: Repository, processes: int, umask: None
) -> None:
    # files created below a setgid directory of group 5678 get group 5678, not root's
    src = _tree(tmp_path / "src")
    want = _metadata(src)
    snap, _ = Archiver(repo).run([str(src)])
    target = tmp_path / "restore"
    target.mkdir()
    os.chown(target, 0, 5678)
    os.chmod(target, 0o2755)
    got = _metadata(_restore(repo, snap, target, processes) / src.relative_to("/"))
    assert got == want
    assert got["plain"][2] == 0  # root's group, as in the snapshot


def test_a_default_acl_on_the_target_does_not_fool_the_mode_skip(
    tmp_path: Path, repo: Repository, processes: int, umask: None
) -> None:
    src = _tree(tmp_path / "src")
    want = _metadata(src)
    snap, _ = Archiver(repo).run([str(src)])
    target = tmp_path / "restore"
    target.mkdir()
    # new entries below get user rw, nothing for group and others, whatever mode is asked
    owner_only = treegen.acl_xattr(((0x01, 6, 0xFFFFFFFF), (0x04, 0, 0xFFFFFFFF), (0x20, 0, 0)))
    try:
        os.setxattr(target, fsmeta.ACL_XATTRS[1], owner_only)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("no POSIX ACLs on this file system")
        raise
    got = _metadata(_restore(repo, snap, target, processes) / src.relative_to("/"))
    assert {name: oct(v[0]) for name, v in got.items()} == {
        name: oct(v[0]) for name, v in want.items()
    }


class Calls:
    """Counts fchown and fchmod of the restore (threads: the test process's own os)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chown: list[int] = []
        self.chmod: list[int] = []
        real_chown, real_chmod = os.fchown, os.fchmod

        def fchown(fd: int, uid: int, gid: int) -> None:
            self.chown.append(uid)
            real_chown(fd, uid, gid)

        def fchmod(fd: int, mode: int) -> None:
            self.chmod.append(mode)
            real_chmod(fd, mode)

        monkeypatch.setattr(os, "fchown", fchown)
        monkeypatch.setattr(os, "fchmod", fchmod)


def test_only_what_creation_cannot_give_is_set_afterwards(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch, umask: None
) -> None:
    src = _tree(tmp_path / "src")
    snap, _ = Archiver(repo).run([str(src)])
    calls = Calls(monkeypatch)
    _restore(repo, snap, tmp_path / "restore", 0)
    # umask 022: 0644, 0600, 0444, 0755 and 0000 come from open(); the rest need fchmod
    assert sorted(calls.chmod) == sorted([0o664, 0o666, 0o4755, 0o2755, 0o1644] + [0o640] * 3)
    if ROOT:  # only the files of other owners are chowned; root's already belong to root
        assert sorted(calls.chown) == [0, 1234, 1234]
    else:
        assert calls.chown == []


def test_nothing_is_skipped_where_the_directory_is_not_plain(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch, umask: None
) -> None:
    src = _tree(tmp_path / "src")
    snap, _ = Archiver(repo).run([str(src)])
    monkeypatch.setattr(plaincreate, "filesystem_type", lambda device: "vfat")
    calls = Calls(monkeypatch)
    _restore(repo, snap, tmp_path / "restore", 0)
    assert len(calls.chmod) == len(os.listdir(src))
    if ROOT:
        assert len(calls.chown) == len(os.listdir(src))


def test_files_in_an_existing_directory_are_not_skipped(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch, umask: None
) -> None:
    src = _tree(tmp_path / "src")
    snap, _ = Archiver(repo).run([str(src)])
    target = tmp_path / "restore"
    (target / src.relative_to("/")).mkdir(parents=True)  # the tree's directory exists
    calls = Calls(monkeypatch)
    _restore(repo, snap, target, 0)
    assert len(calls.chmod) == len(os.listdir(src))


# -- the helpers --------------------------------------------------------------------------------

STATUS = "Name:\tpython3\nUmask:\t0027\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\n"


def test_creator_is_the_file_system_ids_and_the_umask() -> None:
    assert plaincreate.creator(STATUS) == plaincreate.Creator(uid=1003, gid=53, umask=0o027)


def test_creator_is_unknown_without_the_umask_line() -> None:
    assert plaincreate.creator(STATUS.replace("Umask:\t0027\n", "")) is None


def test_creator_of_this_process() -> None:
    made_by = plaincreate.creator()
    assert made_by is not None
    assert (made_by.uid, made_by.gid) == (os.geteuid(), os.getegid())
    before = os.umask(0o037)
    try:
        assert plaincreate.creator() == plaincreate.Creator(os.geteuid(), os.getegid(), 0o037)
    finally:
        os.umask(before)


MOUNTINFO = (
    "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
    "30 22 0:25 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw\n"
    "31 22 8:1 / /mnt/usb rw - vfat /dev/sda1 rw,fmask=0022\n"
    "32 22 0:40 / /mnt/odd\\040name rw shared:9 master:3 - fuse.sshfs host: rw\n"
)


@pytest.mark.parametrize(
    ("device", "kind"),
    [
        (os.makedev(252, 0), "ext4"),
        (os.makedev(0, 25), "tmpfs"),
        (os.makedev(8, 1), "vfat"),
        (os.makedev(0, 40), "fuse.sshfs"),
        (os.makedev(9, 9), None),
    ],
)
def test_mountinfo_type(device: int, kind: str | None) -> None:
    assert plaincreate.mountinfo_type(MOUNTINFO, device) == kind


def test_the_file_system_of_the_tests_is_found(tmp_path: Path) -> None:
    assert plaincreate.filesystem_type(os.stat(tmp_path).st_dev) is not None


@pytest.fixture()
def probe(tmp_path: Path) -> Iterator[tuple[bytes, plaincreate.Creator]]:
    made_by = plaincreate.creator()
    assert made_by is not None
    path = os.fsencode(tmp_path / "fresh")
    os.mkdir(path, plaincreate.DIR_PROBE_MODE)
    if (
        plaincreate.filesystem_type(os.stat(path).st_dev)
        not in plaincreate.POSIX_CREATE_FILESYSTEMS
    ):
        pytest.skip("the tests' file system is not one with POSIX creation")
    yield path, made_by


def test_a_fresh_directory_creates_plainly(probe: tuple[bytes, plaincreate.Creator]) -> None:
    assert plaincreate.creates_plainly(*probe)


def test_a_setgid_directory_does_not(probe: tuple[bytes, plaincreate.Creator]) -> None:
    path, made_by = probe
    os.chmod(path, 0o2700)
    assert not plaincreate.creates_plainly(path, made_by)


def test_a_directory_of_another_group_does_not(probe: tuple[bytes, plaincreate.Creator]) -> None:
    path, made_by = probe
    assert not plaincreate.creates_plainly(
        path, plaincreate.Creator(made_by.uid, 5678, made_by.umask)
    )


def test_another_umask_than_the_directory_shows_does_not(
    probe: tuple[bytes, plaincreate.Creator],
) -> None:
    path, made_by = probe
    assert not plaincreate.creates_plainly(
        path, plaincreate.Creator(made_by.uid, made_by.gid, 0o200)
    )


def test_a_directory_with_a_default_acl_does_not(probe: tuple[bytes, plaincreate.Creator]) -> None:
    path, made_by = probe
    acl = treegen.acl_xattr(((0x01, 7, 0xFFFFFFFF), (0x04, 0, 0xFFFFFFFF), (0x20, 0, 0)))
    try:
        os.setxattr(path, fsmeta.ACL_XATTRS[1], acl)
    except OSError:
        pytest.skip("no POSIX ACLs here")
    assert not plaincreate.creates_plainly(path, made_by)


def test_an_unknown_file_system_does_not(
    probe: tuple[bytes, plaincreate.Creator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plaincreate, "filesystem_type", lambda device: None)
    assert not plaincreate.creates_plainly(*probe)


def test_the_file_system_type_comes_from_the_caller_when_given(
    probe: tuple[bytes, plaincreate.Creator],
) -> None:
    asked: list[int] = []

    def vfat(device: int) -> str:
        asked.append(device)
        return "vfat"

    path, made_by = probe
    assert not plaincreate.creates_plainly(path, made_by, vfat)
    assert asked == [os.stat(path).st_dev]
    assert plaincreate.creates_plainly(path, made_by, lambda device: "ext4")


def test_a_missing_directory_does_not(tmp_path: Path) -> None:
    made_by = plaincreate.creator()
    assert made_by is not None
    assert not plaincreate.creates_plainly(os.fsencode(tmp_path / "gone"), made_by)


# -- regular files straight from their tree documents ------------------------------------------

DOC: dict[str, Any] = {
    "type": "file",
    "name": "a.c",
    "mode": 0o644,
    "size": 3,
    "mtime_ns": 7,
    "atime_ns": 9,
    "uid": 1,
    "gid": 2,
    "user": "u",
    "group": "g",
    "content": ["ab" * 32],
}


def test_a_quick_file_has_the_document_s_fields() -> None:
    quick = restore_jobs.quick_file(dict(DOC))
    assert quick is not None
    assert quick[:10] == (b"a.c", 3, 0o644, 1, 2, "u", "g", 9, 7, [b"\xab" * 32])


@pytest.mark.parametrize(
    "change",
    [
        {"type": "dir"},
        {"type": "symlink"},
        {"nlink": 2},
        {"xattrs": []},
        {"extents": [[0, 1]]},
        {"name": None, "name_b64": "/w=="},
    ],
)
def test_other_entries_are_not_quick(change: dict[str, Any]) -> None:
    doc = {key: value for key, value in {**DOC, **change}.items() if value is not None}
    assert restore_jobs.quick_file(doc) is None


@pytest.mark.parametrize(
    "change", [{"mode": "644"}, {"inode": 1.5}, {"size": None}, {"content": ["zz"]}]
)
def test_a_malformed_quick_file_fails_the_tree(
    tmp_path: Path, repo: Repository, change: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    snap, _ = Archiver(repo).run([str(src)])
    body = {"v": 1, "nodes": [{**DOC, "name": "ok.c"}, {**DOC, **change}]}
    monkeypatch.setattr(repo, "read_blob", lambda blob_id: json.dumps(body).encode())
    restorer = Restorer(repo, snap, tmp_path / "restore", processes=0)
    with pytest.raises(CorruptObject, match=r"malformed|non-integer"):
        restorer._entries(b"tree", True)


def test_a_mode_from_a_quick_file_keeps_its_type_bits_out(tmp_path: Path) -> None:
    # the mode stored is S_IMODE (no type bits): a file is created with exactly those
    made_by = plaincreate.creator()
    assert made_by is not None
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644 & ~made_by.umask)
    os.close(fd)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644 & ~made_by.umask

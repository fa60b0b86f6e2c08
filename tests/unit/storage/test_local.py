"""LocalBackend specifics: crash safety, durability order, error advice, listing, spool links."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.spool import spooled

from roost.errors import ObjectExists, ObjectNotFound, StorageError
from roost.storage import local as local_module
from roost.storage.local import LocalBackend


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def local(root: Path) -> LocalBackend:
    return LocalBackend(root)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _raise(code: int) -> Any:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


def test_failed_publish_leaves_nothing(
    local: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "link", _raise(errno.EIO))
    with pytest.raises(StorageError) as err:
        local.put("data/ab/ab01", b"payload")
    assert type(err.value) is StorageError
    assert "Input/output error" in str(err.value)
    assert files_under(root) == []  # the temp file was cleaned up
    with pytest.raises(ObjectNotFound):
        local.get("data/ab/ab01")


def test_crash_between_temp_write_and_publish(
    local: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash: publishing never happens and neither does any cleanup.
    with monkeypatch.context() as m:
        m.setattr(os, "link", _raise(errno.EIO))
        m.setattr(os, "unlink", lambda *_a, **_k: None)
        with pytest.raises(StorageError):
            local.put("data/ab/ab01", b"payload")
    debris = files_under(root)
    assert len(debris) == 1 and debris[0].startswith("data/ab/.tmp-ab01-")
    assert list(local.list("")) == []
    assert list(local.list("data/ab/")) == []
    with pytest.raises(ObjectNotFound):
        local.stat("data/ab/ab01")
    local.put("data/ab/ab01", b"payload")  # the retry after restart succeeds
    assert local.get("data/ab/ab01") == b"payload"


def test_data_is_fsynced_before_publish_and_directory_after(
    local: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local.put("data/ab/other", b"")  # directories exist: only this put's syncs are seen
    events: list[str] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def link(src: Any, dst: Any, **kwargs: Any) -> None:
        events.append("link")
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    local.put("data/ab/ab01", b"payload")
    assert events == ["fsync-file", "link", "fsync-dir"]


def test_new_directories_are_fsynced_into_their_parents(
    local: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    local.put("data/ab/ab01", b"x")
    # Each directory that gained an entry is synced, after the file itself.
    parent = str(root.parent)
    assert synced[:3] == [parent, str(root), str(root / "data")]
    assert synced[3].startswith(str(root / "data" / "ab" / ".tmp-ab01-"))
    assert synced[4:] == [str(root / "data" / "ab")]


def test_filesystem_without_hard_links_falls_back(
    local: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "link", _raise(errno.EPERM))
    local.put("keys/k1", b"first")
    with pytest.raises(ObjectExists):
        local.put("keys/k1", b"second")
    assert local.get("keys/k1") == b"first"
    assert files_under(root) == ["keys/k1"]


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.EACCES, "check that this user may read and write the repository directory"),
        (errno.ENOSPC, "free space on the repository disk"),
        (errno.EROFS, "remount it read-write"),
    ],
)
def test_os_errors_name_path_reason_and_advice(
    local: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch, code: int, advice: str
) -> None:
    root.mkdir()
    monkeypatch.setattr(os, "open", _raise(code))
    with pytest.raises(StorageError) as err:
        local.put("config", b"x")
    message = str(err.value)
    assert type(err.value) is StorageError
    assert str(root) in message
    assert os.strerror(code) in message
    assert advice in message


def test_permission_denied_on_read(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    local.put("config", b"x")
    monkeypatch.setattr(Path, "open", _raise(errno.EACCES))
    with pytest.raises(StorageError, match=r"cannot read .*config: Permission denied"):
        local.get("config")


def test_put_under_an_object_is_a_storage_error_not_not_found(local: LocalBackend) -> None:
    local.put("config", b"x")
    with pytest.raises(StorageError) as err:
        local.put("config/inner", b"y")
    assert not isinstance(err.value, ObjectNotFound)


def test_list_index_does_not_walk_data(
    local: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        local.put(f"data/{i:02x}/{i:02x}00", b"d")
    local.put("index/i1", b"i")
    scanned: list[str] = []
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        scanned.append(str(Path(path).relative_to(root)))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert [i.key for i in local.list("index/")] == ["index/i1"]
    assert scanned == ["index"]
    scanned.clear()
    assert [i.key for i in local.list("data/01")] == ["data/01/0100"]
    assert scanned == ["data", "data/01"]


def test_list_of_missing_repository_is_empty(local: LocalBackend) -> None:
    assert list(local.list("")) == []
    assert list(local.list("data/ab/")) == []


def test_list_does_not_follow_symlinks(local: LocalBackend, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    local.put("data/ab/ab01", b"x")
    (root / "data" / "cd").symlink_to(outside, target_is_directory=True)
    (root / "data" / "ab" / "ab02").symlink_to(outside / "secret")
    assert [i.key for i in local.list("")] == ["data/ab/ab01"]


def test_objects_are_private_files(local: LocalBackend, root: Path) -> None:
    local.put("keys/k1", b"key material")
    assert stat.S_IMODE((root / "keys" / "k1").stat().st_mode) == 0o600


def test_describe_is_the_path(local: LocalBackend, root: Path) -> None:
    assert local.describe() == str(root)
    assert local.root == root


# -- put_file: a spool file in the repository is published by a link, not copied -------------


@pytest.fixture
def spool_root(local: LocalBackend, root: Path) -> str:
    root.mkdir()  # as init leaves it
    where = local.spool_dir()
    if where is None:
        pytest.skip("the file system here has no O_TMPFILE")
    return where


def test_spool_dir_is_the_root_once_the_repository_exists(
    local: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert local.spool_dir() is None  # no repository yet: not probed, spool elsewhere
    root.mkdir()
    monkeypatch.setattr(local_module, "can_spool_unnamed", lambda _root: False)  # e.g. NFS
    assert LocalBackend(root).spool_dir() is None
    monkeypatch.undo()
    assert local.spool_dir() == str(root)


def test_a_spool_file_becomes_the_object_without_a_copy(
    local: LocalBackend, root: Path, spool_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    local.put("data/ab/other", b"")  # directories exist: only this put's syncs are seen
    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with spooled(b"pack bytes", spool_root) as file:
        local.put_file("data/ab/ab01", file, 10)
        inode = os.fstat(file.fileno()).st_ino
    assert events == ["fsync-file", "fsync-dir"]  # the data before the name, the name after
    assert (root / "data/ab/ab01").stat().st_ino == inode
    assert stat.S_IMODE((root / "data/ab/ab01").stat().st_mode) == 0o600
    assert files_under(root) == ["data/ab/ab01", "data/ab/other"]
    assert local.get("data/ab/ab01") == b"pack bytes"


def test_a_spool_file_replaces_an_object_when_asked(
    local: LocalBackend, root: Path, spool_root: str
) -> None:
    local.put("leases/l1", b"old")
    with spooled(b"new lease", spool_root) as file:
        local.put_file("leases/l1", file, 9, overwrite=True)
    assert files_under(root) == ["leases/l1"] and local.get("leases/l1") == b"new lease"


def test_a_spool_file_that_cannot_be_linked_is_copied(
    root: Path, spool_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with spooled(b"pack bytes", spool_root) as file:
        LocalBackend(root, file_mode=0o640).put_file("data/ab/ab01", file, 10)  # not its mode
        monkeypatch.setattr(local_module, "link_unnamed", lambda *_args: False)  # e.g. EXDEV
        LocalBackend(root).put_file("data/ab/ab02", file, 10)
        inode = os.fstat(file.fileno()).st_ino
    assert {(root / f"data/ab/ab0{n}").stat().st_ino for n in (1, 2)}.isdisjoint({inode})
    assert files_under(root) == ["data/ab/ab01", "data/ab/ab02"]


def test_a_crash_before_the_link_leaves_nothing(
    local: LocalBackend, root: Path, spool_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with spooled(b"pack bytes", spool_root) as file:
        with monkeypatch.context() as m:
            m.setattr(os, "link", _raise(errno.EIO))
            m.setattr(os, "unlink", lambda *_a, **_k: None)
            with pytest.raises(StorageError, match="Input/output error"):
                local.put_file("data/ab/ab01", file, 10)
        assert files_under(root) == []  # nothing to clean up: the spool file has no name
        local.put_file("data/ab/ab01", file, 10)  # the retry succeeds
    assert local.get("data/ab/ab01") == b"pack bytes"

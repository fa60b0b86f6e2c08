"""The filesystem metadata boundary, against a tree with every awkward entry there is.

Most cases need root (devices, foreign owners, trusted xattrs) and a filesystem with user
xattrs; without them the affected cases are skipped with the reason.
"""

from __future__ import annotations

import errno
import grp
import itertools
import os
import pwd
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# tests/helpers is imported as the package ``tests.helpers`` from the project root.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[3])
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

from tests.helpers import treegen  # noqa: E402
from tests.helpers.compare import (  # noqa: E402
    assert_trees_equal,
    diff_snapshots,
    snapshot_tree,
)

from roost.engine import fsmeta  # noqa: E402
from roost.engine.tree import (  # noqa: E402
    BLOCKDEV,
    CHARDEV,
    DIR,
    FIFO,
    FILE,
    SOCKET,
    SYMLINK,
    Node,
)
from roost.errors import CorruptObject, RestoreTargetError, SourceError  # noqa: E402

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, chown, trusted.*)")


# ---------------------------------------------------------------- fixtures and helpers


def _supports_user_xattrs(directory: Path) -> bool:
    probe = directory / "xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.roost.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The awkward tree, built once per module; tests must not change it."""
    base = tmp_path_factory.mktemp("awkward")
    if not _supports_user_xattrs(base):
        pytest.skip(f"{base} is on a filesystem without user xattrs")
    root = base / "src"
    treegen.make_awkward_tree(root)
    return root


@pytest.fixture(scope="module")
def restored(awkward: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A copy of the awkward tree made entry by entry with fsmeta, and its warnings."""
    dst = tmp_path_factory.mktemp("restored") / "dst"
    return dst, copy_tree(awkward, dst)


@pytest.fixture
def fresh_copy(awkward: Path, tmp_path: Path) -> Path:
    """A private copy of the awkward tree that a test may damage."""
    dst = tmp_path / "dst"
    assert copy_tree(awkward, dst) == []
    return dst


def _p(root: Path, rel: bytes) -> bytes:
    return os.fsencode(root) + b"/" + rel


def _has_acl(path: bytes, name: bytes = b"system.posix_acl_access") -> bool:
    try:
        os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return False
    return True


def copy_tree(src: Path, dst: Path) -> list[str]:
    """Copy ``src`` to ``dst`` the way a restore does: create each entry, then apply_metadata."""
    warnings: list[str] = []
    _copy_entry(os.fsencode(src), os.fsencode(dst), warnings, {})
    return warnings


def _copy_entry(
    src: bytes, dst: bytes, warnings: list[str], first_names: dict[tuple[int, int], bytes]
) -> None:
    st = os.lstat(src)
    node = fsmeta.node_from_stat(os.path.basename(src), st, src)
    if node.type == FILE and node.nlink > 1:
        key = (st.st_dev, st.st_ino)
        if key in first_names:
            os.link(first_names[key], dst)
            return
        first_names[key] = dst
    if node.type == DIR:
        os.mkdir(dst, 0o700)
        for name in sorted(os.listdir(src)):
            _copy_entry(src + b"/" + name, dst + b"/" + name, warnings, first_names)
    elif node.type == FILE:
        _copy_file(src, dst, st)
    elif node.type == SYMLINK:
        fsmeta.create_symlink(dst, node)
    else:
        fsmeta.create_special(dst, node)
    warnings += fsmeta.apply_metadata(dst, node)


def _copy_file(src: bytes, dst: bytes, st: os.stat_result) -> None:
    fd_in = os.open(src, os.O_RDONLY | os.O_NOATIME)
    fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        extents = fsmeta.data_extents(fd_in, st.st_size) if fsmeta.is_sparse_candidate(st) else None
        os.ftruncate(fd_out, st.st_size)
        for offset, length in [(0, st.st_size)] if extents is None else extents:
            _copy_range(fd_in, fd_out, offset, length)
    finally:
        os.close(fd_in)
        os.close(fd_out)


def _copy_range(fd_in: int, fd_out: int, offset: int, length: int) -> None:
    end = offset + length
    while offset < end:
        data = os.pread(fd_in, min(1 << 20, end - offset), offset)
        assert data, "source file shrank while copying"
        os.pwrite(fd_out, data, offset)
        offset += len(data)


@contextmanager
def _times_kept(path: bytes) -> Iterator[None]:
    """Put back the atime and mtime of ``path`` after the block changed it."""
    st = os.lstat(path)
    yield
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


# ---------------------------------------------------------------- node_from_stat


def _case(rel: bytes, kind: str, mode: int, size: int = 0, **extra: Any) -> Any:
    marks = [needs_root] if any(rel.startswith(r) for r in treegen.NEEDS_ROOT) else []
    return pytest.param(rel, kind, mode, size, extra, marks=marks, id=repr(rel)[2:-1][:40])


_ROOT_NAMES: dict[str, Any] = {"user": "root", "group": "root"}
_FOREIGN: dict[str, Any] = {"uid": 1234, "gid": 5678, "user": None, "group": None}

NODE_CASES = [
    _case(b"files/empty", FILE, 0o644, 0),
    _case(b"files/one", FILE, 0o644, 1),
    _case(b"files/random_3m", FILE, 0o644, 3 * treegen.MIB),
    _case(b"files/text_5m", FILE, 0o644, 5 * treegen.MIB),
    _case(b"nested/a", DIR, 0o755, nlink=3),
    _case(b"nested/empty_dir", DIR, 0o755, nlink=2),
    _case(b"links/to_file", SYMLINK, 0o777, 12, target=b"../files/one"),
    _case(b"links/dangling", SYMLINK, 0o777, 14, target=b"does/not/exist"),
    _case(b"links/to_dir", SYMLINK, 0o777, 9, target=b"../nested"),
    _case(b"links/non_utf8", SYMLINK, 0o777, 9, target=b"target-\xff\xfe"),
    _case(b"hard/b/three", FILE, 0o644, 11, nlink=3),
    _case(b"sparse/sparse_20m", FILE, 0o644, 20 * treegen.MIB),
    _case(b"sparse/all_hole", FILE, 0o644, 16 * treegen.MIB),
    _case(b"special/fifo", FIFO, 0o640),
    _case(b"special/null", CHARDEV, 0o666, rdev=os.makedev(1, 3)),
    _case(b"special/loop200", BLOCKDEV, 0o660, rdev=os.makedev(7, 200)),
    _case(b"names/caf\xe9", FILE, 0o644, 5),
    _case(b"names/new\nline", FILE, 0o644, 9),
    _case(b"names/" + b"L" * 255, FILE, 0o644, 256),
    _case("names/emoji-🦜🎉".encode(), FILE, 0o644, 15),
    _case(b"names/dir-\xff\xfe", DIR, 0o755, nlink=2),
    _case(b"modes/setuid", FILE, 0o4755, 13),
    _case(b"modes/setgid", FILE, 0o2755, 13),
    _case(b"modes/none", FILE, 0o000, 11),
    _case(b"modes/private", FILE, 0o600, 14),
    _case(b"modes/sticky_dir", DIR, 0o1777, nlink=2),
    _case(b"modes/setgid_dir", DIR, 0o2775, nlink=2),
    _case(b"owners/foreign", FILE, 0o644, 9, **_FOREIGN),
    _case(b"owners/foreign_dir", DIR, 0o755, nlink=2, **_FOREIGN),
    _case(b"owners/setuid_foreign", FILE, 0o4755, 10, **_FOREIGN),
    _case(
        b"owners/foreign_link",
        SYMLINK,
        0o777,
        7,
        target=b"foreign",
        uid=4321,
        gid=8765,
        user=None,
        group=None,
    ),
    _case(b"xattrs/binary", FILE, 0o644, 11, xattrs=sorted(treegen.XATTRS.items())),
    _case(b"xattrs/dir", DIR, 0o755, nlink=2, xattrs=sorted(treegen.DIR_XATTRS.items())),
    _case(b"xattrs/trusted", FILE, 0o644, 14, xattrs=sorted(treegen.TRUSTED_XATTRS.items())),
    _case(
        b"acl/acl_file",
        FILE,
        0o660,
        18,
        xattrs=[(b"system.posix_acl_access", treegen.acl_xattr(treegen.ACL_FILE_ENTRIES))],
    ),
    _case(
        b"acl/acl_dir",
        DIR,
        0o750,
        nlink=2,
        xattrs=[(b"system.posix_acl_default", treegen.acl_xattr(treegen.ACL_DIR_DEFAULT_ENTRIES))],
    ),
    _case(b"times/odd_ns", FILE, 0o644, 13),
    _case(b"times/pre_1970", FILE, 0o644, 15),
    _case(b"times/year_2100", FILE, 0o644, 16),
    _case(b"times/old_dir", DIR, 0o755, nlink=2),
]


@pytest.mark.parametrize(("rel", "kind", "mode", "size", "extra"), NODE_CASES)
def test_node_from_stat_gives_exact_values(
    awkward: Path, rel: bytes, kind: str, mode: int, size: int, extra: dict[str, Any]
) -> None:
    path = _p(awkward, rel)
    if rel.startswith(b"acl/") and not _has_acl(path, extra["xattrs"][0][0]):
        pytest.skip("the filesystem refused POSIX ACLs")
    st = os.lstat(path)
    atime, mtime = treegen.entry_times(rel, symlink=kind == SYMLINK)
    expected = Node(
        name=os.path.basename(rel),
        type=kind,
        mode=mode,
        size=size,
        mtime_ns=mtime,
        atime_ns=atime,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        device=st.st_dev,
        **{"uid": 0, "gid": 0, "nlink": 1, **_ROOT_NAMES, **extra},
    )
    assert fsmeta.node_from_stat(os.path.basename(rel), st, path) == expected


def test_special_times_are_read_to_the_nanosecond(awkward: Path) -> None:
    node = fsmeta.node_from_stat(
        b"pre_1970", os.lstat(_p(awkward, b"times/pre_1970")), _p(awkward, b"times/pre_1970")
    )
    assert (node.atime_ns, node.mtime_ns) == (-86_400_000_000_001, -1_234_567_890_123_456_789)
    node = fsmeta.node_from_stat(
        b"y", os.lstat(_p(awkward, b"times/year_2100")), _p(awkward, b"times/year_2100")
    )
    assert (node.atime_ns, node.mtime_ns) == (4_102_444_800_999_999_999, 4_102_444_800_000_000_001)


def test_hardlinked_names_share_one_inode(awkward: Path) -> None:
    nodes = [
        fsmeta.node_from_stat(b"x", os.lstat(_p(awkward, rel)), _p(awkward, rel))
        for rel in treegen.HARDLINKS
    ]
    assert {(node.device, node.inode, node.nlink) for node in nodes} == {
        (nodes[0].device, nodes[0].inode, 3)
    }


def test_inherited_acl_is_read_as_an_xattr(awkward: Path) -> None:
    path = _p(awkward, b"acl/acl_dir/inherited")
    if not _has_acl(path):
        pytest.skip("the filesystem refused POSIX ACLs")
    node = fsmeta.node_from_stat(b"inherited", os.lstat(path), path)
    assert [name for name, _ in node.xattrs] == [b"system.posix_acl_access"]


def test_node_from_stat_can_skip_xattrs(awkward: Path) -> None:
    path = _p(awkward, b"xattrs/binary")
    assert fsmeta.node_from_stat(b"binary", os.lstat(path), path, read_xattrs=False).xattrs == []


def test_node_from_stat_socket() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        path = os.fsencode(short) + b"/sock"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path)
            node = fsmeta.node_from_stat(b"sock", os.lstat(path), path)
    assert (node.type, node.size, node.rdev, node.target) == (SOCKET, 0, 0, None)


def test_unknown_file_type_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="unsupported file type"):
        fsmeta.file_type(0)


def test_vanished_symlink_is_a_source_error_naming_the_path(awkward: Path, tmp_path: Path) -> None:
    st = os.lstat(_p(awkward, b"links/to_file"))
    gone = os.fsencode(tmp_path) + b"/gone-\xff"
    with pytest.raises(SourceError, match=r"/gone-\\xff': No such file") as info:
        fsmeta.node_from_stat(b"gone", st, gone)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOENT


@pytest.mark.parametrize("code", [errno.ENOTSUP, errno.EPERM, errno.ENODATA])
def test_unsupported_xattrs_read_as_none(
    awkward: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refuse(*args: object, **kwargs: object) -> list[str]:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "listxattr", refuse)
    assert fsmeta.xattrs_of(_p(awkward, b"xattrs/binary")) == []


def test_xattr_that_vanishes_after_listing_is_skipped(
    awkward: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_getxattr = os.getxattr

    def flaky(path: bytes, name: bytes, *, follow_symlinks: bool = True) -> bytes:
        if name == b"user.roost.empty":
            raise OSError(errno.ENODATA, "No data available")
        return real_getxattr(path, name, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(os, "getxattr", flaky)
    names = [name for name, _ in fsmeta.xattrs_of(_p(awkward, b"xattrs/binary"))]
    assert names == sorted(set(treegen.XATTRS) - {b"user.roost.empty"})


def test_other_xattr_errors_are_source_errors(
    awkward: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> list[str]:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "listxattr", broken)
    with pytest.raises(SourceError, match="EIO"):
        fsmeta.xattrs_of(_p(awkward, b"xattrs/binary"))


# ---------------------------------------------------------------- holes


def _aligned(writes: tuple[tuple[int, int], ...], block: int, size: int) -> list[tuple[int, int]]:
    """The data ranges a filesystem with ``block``-sized blocks reports for these writes."""
    ranges: list[list[int]] = []
    for offset, length in writes:
        start = offset // block * block
        end = min(-(-(offset + length) // block) * block, size)
        if ranges and start <= ranges[-1][1]:
            ranges[-1][1] = max(ranges[-1][1], end)
        else:
            ranges.append([start, end])
    return [(start, end - start) for start, end in ranges]


def _extents_of(root: Path, rel: bytes, size: int | None = None) -> list[tuple[int, int]] | None:
    fd = os.open(_p(root, rel), os.O_RDONLY | os.O_NOATIME)
    try:
        return fsmeta.data_extents(fd, os.fstat(fd).st_size if size is None else size)
    finally:
        os.close(fd)


SPARSE_CASES = [
    (b"sparse/sparse_20m", treegen.SPARSE_WRITES, treegen.SPARSE_SIZE),
    (b"sparse/all_hole", (), treegen.ALL_HOLE_SIZE),
    (b"sparse/trailing_hole", treegen.TRAILING_HOLE_WRITES, treegen.TRAILING_HOLE_SIZE),
]


@pytest.mark.parametrize(("rel", "writes", "size"), SPARSE_CASES)
def test_data_extents_of_sparse_files(
    awkward: Path, rel: bytes, writes: tuple[tuple[int, int], ...], size: int
) -> None:
    extents = _extents_of(awkward, rel)
    assert extents is not None
    # Whatever the block size: every written byte is in a range, the ranges are ordered
    # and disjoint, and nothing lies beyond the end of the file.
    for offset, length in writes:
        assert any(s <= offset and offset + length <= s + n for s, n in extents), (offset, extents)
    assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(extents))
    assert all(n > 0 and s + n <= size for s, n in extents)
    # Exactly: the writes rounded out to the filesystem block.
    block = os.stat(_p(awkward, rel)).st_blksize
    assert extents == _aligned(writes, block, size)


@pytest.mark.parametrize("rel", [b"files/one", b"files/random_3m", b"files/empty"])
def test_dense_files_have_no_extents(awkward: Path, rel: bytes) -> None:
    assert _extents_of(awkward, rel) is None


def test_data_extents_stop_at_the_given_size(awkward: Path) -> None:
    block = os.lstat(_p(awkward, b"sparse/sparse_20m")).st_blksize
    first = _aligned(treegen.SPARSE_WRITES[:1], block, treegen.SPARSE_SIZE)[0]
    size = 8 * treegen.MIB + 1000
    assert _extents_of(awkward, b"sparse/sparse_20m", size) == [first, (8 * treegen.MIB, 1000)]
    # Within its first block the file is dense.
    assert _extents_of(awkward, b"sparse/sparse_20m", block) is None


def test_data_extents_leave_the_file_offset_alone(awkward: Path) -> None:
    fd = os.open(_p(awkward, b"sparse/sparse_20m"), os.O_RDONLY | os.O_NOATIME)
    try:
        os.lseek(fd, 12345, os.SEEK_SET)
        assert fsmeta.data_extents(fd, treegen.SPARSE_SIZE)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 12345
    finally:
        os.close(fd)


def test_data_extents_without_seek_hole_support() -> None:
    read_end, write_end = os.pipe()
    try:
        assert fsmeta.data_extents(read_end, 4096) is None  # ESPIPE
    finally:
        os.close(read_end)
        os.close(write_end)


def test_data_extents_when_the_filesystem_rejects_seek_data(
    awkward: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_lseek = os.lseek

    def no_seek_data(fd: int, offset: int, whence: int) -> int:
        if whence in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_lseek(fd, offset, whence)

    monkeypatch.setattr(os, "lseek", no_seek_data)
    assert _extents_of(awkward, b"sparse/sparse_20m") is None


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        (b"sparse/sparse_20m", True),
        (b"sparse/all_hole", True),
        (b"sparse/trailing_hole", True),
        (b"files/random_100k", False),
        (b"files/empty", False),
    ],
)
def test_is_sparse_candidate(awkward: Path, rel: bytes, expected: bool) -> None:
    assert fsmeta.is_sparse_candidate(os.lstat(_p(awkward, rel))) is expected


# ---------------------------------------------------------------- restore side


def test_round_trip_copy_is_identical(awkward: Path, restored: tuple[Path, list[str]]) -> None:
    dst, warnings = restored
    assert warnings == []
    assert_trees_equal(awkward, dst)


def test_round_trip_compares_every_kind_of_entry(restored: tuple[Path, list[str]]) -> None:
    """Guard against a vacuous comparison: the snapshot holds what the tree is about."""
    snap = snapshot_tree(restored[0])
    kinds = {record["type"] for record in snap.values()}
    assert kinds >= {FILE, DIR, SYMLINK, FIFO}
    block = os.lstat(_p(restored[0], b"sparse/sparse_20m")).st_blksize
    assert snap[b"sparse/sparse_20m"]["extents"] == _aligned(
        treegen.SPARSE_WRITES, block, treegen.SPARSE_SIZE
    )
    assert snap[b"sparse/all_hole"]["extents"] == []
    assert snap[b"hard/b/three"]["hardlinks"] == treegen.HARDLINKS
    assert snap[b"modes/setuid"]["mode"] == 0o4755
    assert snap[b"times/pre_1970"]["mtime_ns"] == -1_234_567_890_123_456_789
    assert snap[b"xattrs/binary"]["xattrs"] == treegen.XATTRS
    if IS_ROOT:
        assert kinds >= {CHARDEV, BLOCKDEV}
        assert snap[b"special/null"]["rdev"] == os.makedev(1, 3)
        assert snap[b"owners/setuid_foreign"]["mode"] == 0o4755
        assert (snap[b"owners/foreign_link"]["uid"], snap[b"owners/foreign_link"]["gid"]) == (
            4321,
            8765,
        )


def test_restored_all_hole_file_allocates_nothing(restored: tuple[Path, list[str]]) -> None:
    assert os.lstat(_p(restored[0], b"sparse/all_hole")).st_blocks == 0


def _file_node(**fields: Any) -> Node:
    defaults: dict[str, Any] = {
        "name": b"f",
        "type": FILE,
        "mode": 0o640,
        "mtime_ns": treegen.ODD_NS_TIMES[1],
        "atime_ns": treegen.ODD_NS_TIMES[0],
    }
    return Node(**{**defaults, **fields})


def _new_file(tmp_path: Path, name: str = "f") -> bytes:
    path = os.fsencode(tmp_path / name)
    with open(path, "wb") as out:
        out.write(b"data")
    return path


@needs_root
def test_setuid_survives_the_owner_change(tmp_path: Path) -> None:
    path = _new_file(tmp_path)
    node = _file_node(mode=0o4755, uid=1234, gid=5678)
    assert fsmeta.apply_metadata(path, node) == []
    st = os.lstat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 1234, 5678)
    assert (st.st_atime_ns, st.st_mtime_ns) == treegen.ODD_NS_TIMES


def _local_ids(user: str, group: str) -> tuple[int, int]:
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        pytest.skip(f"no local {user}:{group}")


@needs_root
@pytest.mark.parametrize("numeric_ids", [False, True])
def test_owner_names_win_over_ids_unless_numeric(tmp_path: Path, numeric_ids: bool) -> None:
    local = _local_ids("nobody", "nogroup")
    path = _new_file(tmp_path)
    node = _file_node(uid=1234, gid=5678, user="nobody", group="nogroup")
    assert fsmeta.apply_metadata(path, node, numeric_ids=numeric_ids) == []
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid) == ((1234, 5678) if numeric_ids else local)


def test_restore_ids_fall_back_to_numbers_for_unknown_names() -> None:
    node = _file_node(uid=1234, gid=5678, user="no-such-user-roost", group="no-such-group-roost")
    assert fsmeta.restore_ids(node) == (1234, 5678)
    assert fsmeta.restore_ids(_file_node(uid=7, gid=8, user="root", group="root")) == (0, 0)
    assert fsmeta.restore_ids(_file_node(uid=7, gid=8, user="root"), numeric_ids=True) == (7, 8)


def test_owner_is_left_alone_when_not_asked(tmp_path: Path) -> None:
    path = _new_file(tmp_path)
    before = os.lstat(path)
    assert fsmeta.apply_metadata(path, _file_node(uid=1234, gid=5678), restore_owner=False) == []
    assert (os.lstat(path).st_uid, os.lstat(path).st_gid) == (before.st_uid, before.st_gid)


def test_owner_is_skipped_silently_when_not_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _new_file(tmp_path)
    before = os.lstat(path)

    def no_chown(*args: object, **kwargs: object) -> None:
        raise AssertionError("lchown must not be called when not root")

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "lchown", no_chown)
    assert fsmeta.apply_metadata(path, _file_node(uid=1234, gid=5678)) == []
    assert os.lstat(path).st_uid == before.st_uid
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640


def test_failures_become_warnings_and_later_steps_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _new_file(tmp_path, "caf\udce9")  # the bytes b"caf\xe9"

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    def unsupported(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "lchown", refuse)
    monkeypatch.setattr(os, "setxattr", unsupported)
    node = _file_node(uid=1234, gid=5678, xattrs=[(b"user.a", b"1"), (b"user.b", b"2")])
    warnings = fsmeta.apply_metadata(path, node)
    shown = "'" + str(tmp_path) + "/caf\\xe9'"
    code = errno.errorcode[errno.EOPNOTSUPP]  # EOPNOTSUPP and ENOTSUP are one value on Linux
    assert warnings == [
        f"{shown}: cannot set owner 1234:5678: Operation not permitted (EPERM)",
        f"{shown}: cannot set xattr b'user.a': Operation not supported ({code})",
        f"{shown}: cannot set xattr b'user.b': Operation not supported ({code})",
    ]
    st = os.lstat(path)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_atime_ns, st.st_mtime_ns) == treegen.ODD_NS_TIMES


def test_xattr_a_fifo_refuses_is_a_warning(tmp_path: Path) -> None:
    path = os.fsencode(tmp_path / "fifo")
    node = Node(name=b"fifo", type=FIFO, mode=0o600, xattrs=[(b"user.x", b"1")], mtime_ns=5)
    fsmeta.create_special(path, node)
    warnings = fsmeta.apply_metadata(path, node, restore_owner=False)
    assert len(warnings) == 1
    assert "user.x" in warnings[0]
    assert os.lstat(path).st_mtime_ns == 5


def test_symlink_metadata_does_not_touch_the_target(tmp_path: Path) -> None:
    target = _new_file(tmp_path, "target")
    os.chmod(target, 0o644)
    before = os.lstat(target)
    link = os.fsencode(tmp_path / "link")
    node = Node(
        name=b"link",
        type=SYMLINK,
        mode=0o777,
        target=b"target",
        atime_ns=treegen.YEAR_2100_TIMES[0],
        mtime_ns=treegen.PRE_1970_TIMES[1],
    )
    fsmeta.create_symlink(link, node)
    assert fsmeta.apply_metadata(link, node) == []
    after = os.lstat(target)
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert os.lstat(link).st_mtime_ns == treegen.PRE_1970_TIMES[1]
    assert os.readlink(link) == b"target"


@needs_root
def test_acl_then_mode_restores_both(tmp_path: Path) -> None:
    path = _new_file(tmp_path)
    acl = treegen.acl_xattr(treegen.ACL_FILE_ENTRIES)  # its mask is rw-
    node = _file_node(mode=0o640, xattrs=[(b"system.posix_acl_access", acl)])
    warnings = fsmeta.apply_metadata(path, node)
    if warnings:
        pytest.skip(f"the filesystem refused POSIX ACLs: {warnings}")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640
    # chmod after the ACL set its mask from the group bits: r--.
    stored = os.getxattr(path, b"system.posix_acl_access")
    assert stored == treegen.acl_xattr(
        tuple((tag, 4 if tag == 0x10 else perm, uid) for tag, perm, uid in treegen.ACL_FILE_ENTRIES)
    )


@needs_root
@pytest.mark.parametrize(
    ("kind", "rdev"), [(CHARDEV, os.makedev(1, 3)), (BLOCKDEV, os.makedev(7, 200)), (FIFO, 0)]
)
def test_create_special(tmp_path: Path, kind: str, rdev: int) -> None:
    path = os.fsencode(tmp_path / "node")
    fsmeta.create_special(path, Node(name=b"node", type=kind, rdev=rdev))
    st = os.lstat(path)
    assert (fsmeta.file_type(st.st_mode), st.st_rdev) == (kind, rdev)


def test_create_special_refuses_other_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="socket"):
        fsmeta.create_special(os.fsencode(tmp_path / "s"), Node(name=b"s", type=SOCKET))


def test_create_errors_are_restore_target_errors(tmp_path: Path) -> None:
    taken = _new_file(tmp_path, "taken")
    with pytest.raises(RestoreTargetError, match="taken"):
        fsmeta.create_special(taken, Node(name=b"taken", type=FIFO))
    with pytest.raises(RestoreTargetError, match="EEXIST"):
        fsmeta.create_symlink(taken, Node(name=b"taken", type=SYMLINK, target=b"x"))


def test_symlink_without_target_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptObject):
        fsmeta.create_symlink(os.fsencode(tmp_path / "l"), Node(name=b"l", type=SYMLINK))


# ---------------------------------------------------------------- the comparator itself


def _flip_byte(root: Path) -> None:
    path = _p(root, b"files/random_100k")
    with _times_kept(path):
        fd = os.open(path, os.O_RDWR)
        byte = os.pread(fd, 1, 50_000)
        os.pwrite(fd, bytes([byte[0] ^ 1]), 50_000)
        os.close(fd)


def _flip_mode_bit(root: Path) -> None:
    os.chmod(_p(root, b"modes/private"), 0o601)


def _shift_mtime(root: Path) -> None:
    path = _p(root, b"times/odd_ns")
    st = os.lstat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))


def _shift_dir_mtime(root: Path) -> None:
    path = _p(root, b"nested/a")
    st = os.lstat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 1))


def _change_xattr(root: Path) -> None:
    os.setxattr(_p(root, b"xattrs/binary"), b"user.roost.test", treegen.XATTR_BINARY[:-1] + b"!")


def _break_hardlink(root: Path) -> None:
    path = _p(root, b"hard/b/three")
    st = os.lstat(path)
    with _times_kept(_p(root, b"hard/b")):
        os.unlink(path)
        with open(path, "wb") as out:
            out.write(b"hardlinked\n")
    os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _retarget_symlink(root: Path) -> None:
    path = _p(root, b"links/dangling")
    st = os.lstat(path)
    with _times_kept(_p(root, b"links")):
        os.unlink(path)
        os.symlink(b"does/not/exisT", path)  # same length, so only the target differs
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


MUTATIONS = [
    pytest.param(_flip_byte, {b"files/random_100k"}, "sha256", id="one-byte"),
    pytest.param(_flip_mode_bit, {b"modes/private"}, "mode", id="one-mode-bit"),
    pytest.param(_shift_mtime, {b"times/odd_ns"}, "mtime_ns", id="one-mtime-ns"),
    pytest.param(_shift_dir_mtime, {b"nested/a"}, "mtime_ns", id="dir-mtime-ns"),
    pytest.param(_change_xattr, {b"xattrs/binary"}, "xattrs", id="one-xattr"),
    pytest.param(_break_hardlink, set(treegen.HARDLINKS), "hardlinks", id="one-hardlink"),
    pytest.param(_retarget_symlink, {b"links/dangling"}, "target", id="symlink-target"),
]


@pytest.mark.parametrize(("mutate", "paths", "field"), MUTATIONS)
def test_comparator_catches_the_smallest_difference(
    awkward: Path, fresh_copy: Path, mutate: Callable[[Path], None], paths: set[bytes], field: str
) -> None:
    mutate(fresh_copy)
    with pytest.raises(AssertionError) as info:
        assert_trees_equal(awkward, fresh_copy)
    message = str(info.value)
    lines = message.splitlines()[1:]
    assert {line.split(":", 1)[0].strip() for line in lines} == {repr(p) for p in paths}
    assert all(f": {field} differs:" in line for line in lines), message


def test_comparator_message_is_readable(awkward: Path, fresh_copy: Path) -> None:
    _change_xattr(fresh_copy)
    _flip_mode_bit(fresh_copy)
    with pytest.raises(AssertionError) as info:
        assert_trees_equal(awkward, fresh_copy)
    assert str(info.value).splitlines()[1:] == [
        "  b'modes/private': mode differs: source 0o0600 != destination 0o0601",
        "  b'xattrs/binary': xattrs differs: b'user.roost.test' is "
        "b'\\x00\\x01\\xfe\\xff roost\\n' != b'\\x00\\x01\\xfe\\xff roost!'",
    ]


def test_comparator_lists_every_difference(awkward: Path, fresh_copy: Path) -> None:
    for mutate in (_flip_byte, _flip_mode_bit, _shift_mtime, _change_xattr, _break_hardlink):
        mutate(fresh_copy)
    os.unlink(_p(fresh_copy, b"names/caf\xe9"))
    (fresh_copy / "extra").write_bytes(b"")
    with pytest.raises(AssertionError) as info:
        assert_trees_equal(awkward, fresh_copy)
    message = str(info.value)
    for expected in (
        "b'files/random_100k': sha256 differs",
        "b'modes/private': mode differs",
        "b'times/odd_ns': mtime_ns differs",
        "b'xattrs/binary': xattrs differs",
        "b'hard/b/three': hardlinks differs",
        "b'names/caf\\xe9': missing in destination (source has a file)",
        "b'extra': only in destination (a file)",
        "b'names': mtime_ns differs",
    ):
        assert expected in message, message
    assert message.startswith(f"{len(message.splitlines()) - 1} difference(s) between ")


def test_comparator_ignores_paths_and_their_subtrees(awkward: Path, fresh_copy: Path) -> None:
    _shift_dir_mtime(fresh_copy)
    _shift_mtime(fresh_copy)
    assert_trees_equal(awkward, fresh_copy, ignore=[b"nested", b"times/odd_ns"])
    with pytest.raises(AssertionError):
        assert_trees_equal(awkward, fresh_copy, ignore=[b"nested"])


def test_comparator_checks_atime_only_when_asked(awkward: Path, fresh_copy: Path) -> None:
    path = _p(fresh_copy, b"files/one")
    st = os.lstat(path)
    os.utime(path, ns=(st.st_atime_ns + 1, st.st_mtime_ns))
    with pytest.raises(AssertionError, match="b'files/one': atime_ns differs"):
        assert_trees_equal(awkward, fresh_copy)
    assert_trees_equal(awkward, fresh_copy, check_atime=False)


def test_comparator_reading_does_not_move_atimes(awkward: Path) -> None:
    first = snapshot_tree(awkward)
    assert diff_snapshots(first, snapshot_tree(awkward)) == []


def test_root_is_compared_on_mode_owner_and_mtime_only(awkward: Path, fresh_copy: Path) -> None:
    os.setxattr(fresh_copy, b"user.roost.root", b"ignored on the root")
    assert_trees_equal(awkward, fresh_copy)
    os.chmod(fresh_copy, 0o755)
    with pytest.raises(AssertionError, match=r"b'\.': mode differs: source 0o0751"):
        assert_trees_equal(awkward, fresh_copy)

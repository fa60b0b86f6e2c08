"""Restore onto existing files: overwrite, skip, rename and if-newer, exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from roost.engine.archiver import Archiver
from roost.engine.keys import KdfParams
from roost.engine.repository import Repository
from roost.engine.restorer import Restorer
from roost.engine.snapshot import Snapshot
from roost.errors import UsageError
from roost.storage.memory import MemoryBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)
OLD, NEW = 1_600_000_000 * 10**9, 1_800_000_000 * 10**9


@pytest.fixture()
def backed_up(tmp_path: Path) -> tuple[Repository, Snapshot, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"from the snapshot")
    os.utime(src / "a.txt", ns=(OLD, OLD))
    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    snap, _ = Archiver(repo).run([str(src)])
    return repo, snap, src


def _existing(target: Path, src: Path, mtime_ns: int) -> Path:
    restored = target / src.relative_to("/")
    restored.mkdir(parents=True)
    path = restored / "a.txt"
    path.write_bytes(b"already there")
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return restored


@pytest.mark.parametrize(
    ("policy", "existing_mtime", "expected", "renamed"),
    [
        ("overwrite", NEW, b"from the snapshot", 0),
        ("skip", OLD, b"already there", 0),
        ("rename", NEW, b"already there", 1),
        ("if-newer", NEW, b"already there", 0),  # the existing copy is newer: kept
        ("if-newer", OLD - 10**9, b"from the snapshot", 0),  # the snapshot's is newer
    ],
)
def test_conflict_policies(
    tmp_path: Path,
    backed_up: tuple[Repository, Snapshot, Path],
    policy: str,
    existing_mtime: int,
    expected: bytes,
    renamed: int,
) -> None:
    repo, snap, src = backed_up
    target = tmp_path / "target"
    restored = _existing(target, src, existing_mtime)
    summary = Restorer(repo, snap, target, conflict=policy).run()
    assert (restored / "a.txt").read_bytes() == expected
    assert summary.renamed == renamed
    copies = sorted(p.name for p in restored.iterdir() if p.name != "a.txt")
    if renamed:
        assert len(copies) == 1 and copies[0].startswith("a.txt.restored-")
        assert (restored / copies[0]).read_bytes() == b"from the snapshot"
    else:
        assert copies == []


def test_unknown_conflict_policy_is_refused(
    tmp_path: Path, backed_up: tuple[Repository, Snapshot, Path]
) -> None:
    repo, snap, _ = backed_up
    with pytest.raises(UsageError, match="--conflict must be one of overwrite, skip, rename"):
        Restorer(repo, snap, tmp_path / "t", conflict="merge")


def test_restore_never_follows_a_symlink_in_the_target(
    tmp_path: Path, backed_up: tuple[Repository, Snapshot, Path]
) -> None:
    repo, snap, src = backed_up
    target = tmp_path / "target"
    outside = tmp_path / "outside"
    outside.mkdir()
    parent = (target / src.relative_to("/")).parent
    parent.mkdir(parents=True)
    os.symlink(outside, parent / src.name)  # the snapshot's directory is a symlink here
    Restorer(repo, snap, target, conflict="overwrite").run()
    assert list(outside.iterdir()) == []  # nothing written through the link
    assert (parent / src.name).is_dir() and not (parent / src.name).is_symlink()
    assert (parent / src.name / "a.txt").read_bytes() == b"from the snapshot"

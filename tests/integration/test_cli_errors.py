"""Bad input never produces a traceback, always one ``roost: error:`` line, and changes nothing.

Each case runs one failing command against a repository holding one snapshot and compares a
digest of every file in the repository (and of the other paths involved) before and after.
The unprivileged cases run ``roost`` as uid 65534 via ``setpriv`` (root only).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.helpers.cli import NOBODY, ROOST, SETPRIV, Result, Roost, tree_digest, write_files

pytestmark = pytest.mark.skipif(ROOST is None, reason="the roost console script is not installed")

ONE_MISSED = "roost: error: completed with errors: 1 files could not be read"


def assert_clean_failure(result: Result, code: int, message: str) -> None:
    """Exit ``code``, nothing on stdout, one stderr line: ``roost: error: ...message...``."""
    assert result.code == code, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    assert len(result.stderr_lines) == 1, result.stderr
    assert result.stderr_lines[0].startswith("roost: error: ")
    assert message in result.stderr_lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Roost, Path]:
    """A repository with one snapshot of a small tree; shared, because no case may change it."""
    base = tmp_path_factory.mktemp("cli-errors")
    src = base / "src"
    write_files(src, {"a.txt": b"alpha", "dir/b.txt": b"beta"})
    roost = Roost(base / "repo")
    roost.ok("init")
    roost.ok("backup", src)
    return roost, src


def _other_repo(path: Path) -> dict[str, str]:
    return {"ROOST_REPO": str(path)}


Case = tuple[Callable[[Path], list[str | Path]], dict[str, str], int, str]
CASES: dict[str, Case] = {
    "wrong passphrase": (
        lambda src: ["backup", src], {"ROOST_PASSWORD": "wrong"}, 12, "Wrong passphrase"
    ),
    "missing repository path": (
        lambda src: ["snapshots"], _other_repo(Path("/nonexistent/roost-repo")), 10,
        "no Roost repository at /nonexistent/roost-repo",
    ),
    "not a repository": (
        lambda src: ["backup", src], {"ROOST_REPO": "@src"}, 10, "no Roost repository at",
    ),
    "source does not exist": (
        lambda src: ["backup", src / "missing"], {}, 15, "does not exist",
    ),
    "restore target under a file": (
        lambda src: ["restore", "latest", "--target", src / "a.txt" / "target"], {}, 16,
        "cannot create restore target",
    ),
    "bad size": (
        lambda src: ["backup", src, "--exclude-larger-than", "12Q"], {}, 2, "cannot read size",
    ),
    "bad pattern": (
        lambda src: ["backup", src, "--exclude", "!"], {}, 2, "invalid exclude pattern",
    ),
    "unknown snapshot": (lambda src: ["ls", "ffffffff"], {}, 2, "no snapshot matches"),
    "bad duration": (
        lambda src: ["forget", "--keep-within", "3 fortnights"], {}, 2, "invalid duration",
    ),
    "init over a repository": (lambda src: ["init"], {}, 1, "already exists"),
    "no repository given": (
        lambda src: ["snapshots"], {"ROOST_REPO": ""}, 2, "no repository given"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_cleanly_and_changes_nothing(world: tuple[Roost, Path], case: str) -> None:
    roost, src = world
    make_args, env, code, message = CASES[case]
    env = {k: str(src) if v == "@src" else v for k, v in env.items()}
    before = tree_digest(roost.repo), tree_digest(src)
    assert_clean_failure(roost(*make_args(src), env=env), code, message)
    assert (tree_digest(roost.repo), tree_digest(src)) == before
    assert not Path("/nonexistent").exists()


def test_no_passphrase_without_a_terminal(world: tuple[Roost, Path]) -> None:
    roost, _ = world
    before = tree_digest(roost.repo)
    result = roost("snapshots", unset=("ROOST_PASSWORD",))
    message = "no passphrase: set ROOST_PASSWORD, use --password-file, or run interactively"
    assert_clean_failure(result, 2, message)
    assert result.stderr == f"roost: error: {message}\n"
    empty = roost.repo.parent / "empty-password"
    empty.write_text("\n")
    result = roost("--password-file", empty, "snapshots", unset=("ROOST_PASSWORD",))
    assert_clean_failure(result, 2, "is empty")
    assert tree_digest(roost.repo) == before


def test_corrupt_config_is_reported_not_raised(world: tuple[Roost, Path], tmp_path: Path) -> None:
    roost, src = world
    copy = Roost(tmp_path / "repo")
    shutil.copytree(roost.repo, copy.repo)
    config = copy.repo / "config"
    data = bytearray(config.read_bytes())
    data[len(data) // 2] ^= 0x01
    config.write_bytes(bytes(data))
    before = tree_digest(copy.repo)
    assert_clean_failure(copy("backup", src), 13, "the repository config at")
    assert tree_digest(copy.repo) == before


# -- as an unprivileged user -----------------------------------------------------------------


def _nobody_can_run_roost() -> bool:
    if os.geteuid() != 0 or SETPRIV is None:
        return False
    return Roost(Path("/nonexistent"))("--version", as_nobody=True).code == 0


needs_nobody = pytest.mark.skipif(
    not _nobody_can_run_roost(), reason="needs root, setpriv, and a venv uid 65534 can run"
)


@pytest.fixture()
def shared_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="roost-cli-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@needs_nobody
def test_unreadable_file_is_missed_with_exit_3_and_retried(shared_dir: Path) -> None:
    src = shared_dir / "src"
    write_files(src, {"public.txt": b"everyone", "dir/also.txt": b"public", "secret.txt": b"x"})
    for path in [src, src / "dir"]:
        path.chmod(0o755)
    secret = src / "secret.txt"
    secret.chmod(0o000)
    (shared_dir / "repo").mkdir()
    os.chown(shared_dir / "repo", NOBODY, NOBODY)
    roost = Roost(shared_dir / "repo")
    roost.ok("init", as_nobody=True)

    result = roost("backup", src, "--json", as_nobody=True)
    assert result.code == 3
    assert result.stderr_lines == [ONE_MISSED]
    report = result.json()
    assert (report["files_new"], report["files_missed"]) == (2, 1)
    assert report["missed"] == [{"path": str(secret), "reason": "permission denied"}]
    human = roost("backup", src, as_nobody=True)
    assert human.code == 3
    assert f"could not read {secret}: permission denied" in human.stderr
    assert human.stderr_lines[-1] == ONE_MISSED
    assert [len(s["missed"]) for s in roost.json("snapshots")] == [1, 1]  # both were saved

    target = shared_dir / "locked"  # root's, mode 0755: not writable for uid 65534
    target.mkdir()
    before = tree_digest(roost.repo)
    restore = roost("restore", "latest", "--target", target, as_nobody=True)
    assert_clean_failure(restore, 16, "is not writable")
    assert tree_digest(roost.repo) == before and list(target.iterdir()) == []

    retried = roost.json("backup", src)  # as root: the missed file is read this time
    assert (retried["files_new"], retried["files_unchanged"], retried["files_missed"]) == (1, 2, 0)

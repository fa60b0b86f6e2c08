"""The ``roost`` command line end to end: real processes, real files, exact outcomes."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.cli import PASSWORD, ROOST, Roost, run_on_terminal, tree_digest, write_files
from tests.helpers.compare import assert_trees_equal
from tests.helpers.treegen import make_awkward_tree

from roost.engine.retention import EMPTY_POLICY_MESSAGE

pytestmark = pytest.mark.skipif(ROOST is None, reason="the roost console script is not installed")

MiB = 1024 * 1024
PACK_SIZE = str(128 * 1024)  # small packs, so small data still spans several


@pytest.fixture()
def roost(tmp_path: Path) -> Roost:
    return Roost(tmp_path / "repo", ROOST_PACK_SIZE=PACK_SIZE)


def _counts(report: dict[str, int]) -> tuple[int, int, int, int]:
    keys = ("files_new", "files_changed", "files_unchanged", "files_missed")
    return tuple(report[key] for key in keys)  # type: ignore[return-value]


def _regular_files(root: Path) -> tuple[int, int]:
    """(names, distinct inodes) of the regular files below ``root``."""
    found = [p.lstat() for p in root.rglob("*") if stat.S_ISREG(p.lstat().st_mode)]
    return len(found), len({(st.st_dev, st.st_ino) for st in found})


def test_init_backup_snapshots_restore_and_ls_round_trip(tmp_path: Path, roost: Roost) -> None:
    src = tmp_path / "src"
    make_awkward_tree(src)
    created = roost.json("init")
    assert created["repository"] == str(roost.repo)
    assert re.fullmatch(r"[0-9a-f]{32}", created["id"])
    assert re.fullmatch(r"([A-Z2-7]{4}-){7}[A-Z2-7]{4}", created["recovery_key"])

    report = roost.json("backup", src)
    names, inodes = _regular_files(src)
    assert _counts(report) == (inodes, 0, names - inodes, 0)  # extra hard-link names reuse
    assert report["missed"] == []
    snaps = roost.json("snapshots")
    assert [(s["id"], s["paths"], s["parent"]) for s in snaps] == [
        (report["snapshot_id"], [str(src)], None)
    ]

    restored = roost.json("restore", "latest", "--target", tmp_path / "dst")
    assert restored["warnings"] == []
    assert_trees_equal(src, tmp_path / "dst" / src.relative_to("/"))

    names_dir = src / "names"
    listing = roost.ok("ls", report["short_id"], names_dir, "--json")
    entries = listing.json()
    assert "caf\\udce9" in listing.stdout  # non-UTF-8 bytes as surrogate escapes, ASCII only
    paths = {entry["path"] for entry in entries}
    assert os.fsdecode(os.fsencode(names_dir) + b"/caf\xe9") in paths
    assert f"{names_dir}/new\nline" in paths
    human = roost.ok("ls", "latest", names_dir).stdout.splitlines()
    assert len(human) == len(entries)  # one line per entry, even for names with newlines
    assert f"{names_dir}/caf\\xe9" in human
    assert f"{names_dir}/new\\nline" in human


def test_incremental_backups_diff_and_stats_are_exact(tmp_path: Path, roost: Roost) -> None:
    src = tmp_path / "src"
    files = {"a.txt": b"alpha" * 1000, "dir/b.bin": os.urandom(300_000), "dir/sub/c.txt": b"c" * 60}
    write_files(src, files)
    total = sum(len(data) for data in files.values())
    roost.ok("init")

    first = roost.json("backup", src)
    assert _counts(first) == (3, 0, 0, 0)
    assert (first["bytes_read"], first["bytes_total"], first["parent"]) == (total, total, None)
    second = roost.json("backup", src)
    assert _counts(second) == (0, 0, 3, 0)
    assert (second["bytes_read"], second["parent"]) == (0, first["snapshot_id"])

    (src / "a.txt").write_bytes(b"ALPHA" * 1000 + b"!")
    (src / "new.txt").write_bytes(b"new")
    (src / "dir/sub/c.txt").unlink()
    third = roost.json("backup", src)
    assert _counts(third) == (1, 1, 1, 0)
    assert third["bytes_read"] == 5001 + 3

    diff = roost.json("diff", first["short_id"], third["snapshot_id"][:12])
    assert [(c["change"], c["path"], c["what"]) for c in diff["changes"]] == [
        ("M", f"{src}/a.txt", ["content", "metadata"]),
        ("-", f"{src}/dir/sub/c.txt", []),
        ("+", f"{src}/new.txt", []),
    ]
    assert (diff["added"], diff["removed"], diff["modified"]) == (1, 1, 1)
    assert roost.ok("diff", first["short_id"], second["short_id"]).stdout == (
        "0 added, 0 removed, 0 modified\n"
    )

    stats = roost.json("stats")
    logical = 2 * total + 5001 + 300_000 + 3
    unique = total + 5001 + 3
    packs = [p for p in (roost.repo / "data").rglob("*") if p.is_file()]
    assert (stats["snapshots"], stats["files"]) == (3, 9)
    assert (stats["logical_size"], stats["unique_size"]) == (logical, unique)
    assert stats["stored_size"] == sum(p.stat().st_size for p in packs)
    assert stats["packs"] == len(packs)
    assert stats["dedup_ratio"] == pytest.approx(logical / unique)
    one = roost.json("stats", third["short_id"])
    assert (one["snapshots"], one["files"], one["logical_size"]) == (1, 3, 5001 + 300_000 + 3)


def test_a_copy_under_another_path_stores_almost_nothing(tmp_path: Path, roost: Roost) -> None:
    one = tmp_path / "one"
    write_files(one, {f"f{i}": os.urandom(MiB) for i in range(4)})
    roost.ok("init")
    first = roost.json("backup", one)
    assert first["bytes_stored"] > 4 * MiB  # random data: nothing to compress
    shutil.copytree(one, tmp_path / "two")
    second = roost.json("backup", tmp_path / "two")
    assert second["parent"] is None  # other paths, other backup set
    assert (second["files_new"], second["bytes_read"]) == (4, 4 * MiB)
    assert second["bytes_stored"] < 0.01 * 4 * MiB


def test_excludes_are_honoured_exactly(tmp_path: Path, roost: Roost) -> None:
    src = tmp_path / "src"
    write_files(
        src,
        {
            "keep.txt": b"k",
            "a.tmp": b"t",
            "sub/b.tmp": b"t",
            "sub/keep2.txt": b"k2",
            "cache/x": b"c",
            "sub/cache/y": b"c",
            "big.bin": bytes(2000),
            "sub/small.bin": bytes(1000),
        },
    )
    exclude_file = tmp_path / "excludes"
    exclude_file.write_text("# caches are rebuilt anyway\ncache/\n")
    roost.ok("init")
    report = roost.json(
        "backup", src, "--exclude", "*.tmp", "--exclude-file", exclude_file,
        "--exclude-larger-than", "1K",
    )  # fmt: skip
    assert _counts(report) == (3, 0, 0, 0)
    listed = {entry["path"] for entry in roost.json("ls", "latest", src)}
    expected = {"keep.txt", "sub", "sub/keep2.txt", "sub/small.bin"}
    assert listed == {f"{src}/{rel}" for rel in expected}


def test_forget_dry_run_explains_and_forget_then_prune(tmp_path: Path, roost: Roost) -> None:
    src_a, src_b = tmp_path / "a", tmp_path / "b"
    write_files(src_b, {"b": b"b"})
    roost.ok("init")
    ids_a = []
    for _ in range(3):
        write_files(src_a, {"data": os.urandom(200_000)})
        ids_a.append(roost.json("backup", src_a)["snapshot_id"])
    id_b = roost.json("backup", src_b)["snapshot_id"]
    times = {s["id"]: s["time"] for s in roost.json("snapshots")}  # UTC: TZ=UTC
    before = tree_digest(roost.repo)

    plan = roost.json("forget", "--keep-last", "1", "--keep-daily", "1", "--dry-run")
    assert [(s["id"], s["keep"], s["reasons"]) for s in plan["snapshots"]] == [
        (ids_a[2], True, ["last snapshot #1", f"daily snapshot #1 ({times[ids_a[2]][:10]})"]),
        (ids_a[1], False, []),
        (ids_a[0], False, []),
        (id_b, True, ["last snapshot #1", f"daily snapshot #1 ({times[id_b][:10]})"]),
    ]
    assert (plan["dry_run"], plan["kept"], plan["removed"]) == (True, 2, 2)
    human = roost.ok("forget", "--keep-last", "1", "--dry-run").stdout.splitlines()
    assert sum(line.lstrip().startswith("would remove") for line in human) == 2
    assert human[-1] == "2 snapshots kept, 2 to remove"
    assert tree_digest(roost.repo) == before  # a dry run deletes nothing

    refused = roost("forget")
    assert (refused.code, refused.stderr) == (2, f"roost: error: {EMPTY_POLICY_MESSAGE}\n")

    done = roost.json("forget", "--keep-last", "1", "--prune")
    assert done["removed"] == 2
    assert done["prune"]["tombstoned_blobs"] > 0 and done["prune"]["bytes_freed"] > 0
    assert {s["id"] for s in roost.json("snapshots")} == {ids_a[2], id_b}
    roost.ok("restore", ids_a[2][:8], "--target", tmp_path / "dst")
    assert (tmp_path / "dst" / src_a.relative_to("/") / "data").read_bytes() == (
        src_a / "data"
    ).read_bytes()


def test_keys_add_list_remove_and_recovery_key(tmp_path: Path, roost: Roost) -> None:
    recovery = roost.json("init")["recovery_key"]
    added = roost.json("key", "add", env={"ROOST_NEW_PASSWORD": "second secret"})
    keys = roost.json("key", "list")
    assert sorted(k["kind"] for k in keys) == ["passphrase", "passphrase", "recovery"]
    in_use = [k["id"] for k in keys if k["in_use"]]
    assert len(in_use) == 1 and in_use[0] != added["id"]

    refused = roost("key", "remove", in_use[0][:10])
    assert refused.code == 2 and "refusing to remove the key you are using" in refused.stderr
    password_file = tmp_path / "password"
    password_file.write_text("second secret\n")
    by_file = ("--password-file", password_file)
    roost.ok(*by_file, "key", "remove", in_use[0][:10], unset=("ROOST_PASSWORD",))

    old = roost("snapshots")
    assert (old.code, old.stderr) == (
        12,
        "roost: error: Wrong passphrase: no key of this repository opens with it.\n",
    )
    keys = roost.json(*by_file, "key", "list", unset=("ROOST_PASSWORD",))
    assert [k["id"] for k in keys if k["in_use"]] == [added["id"]]
    keys = roost.json("key", "list", env={"ROOST_PASSWORD": recovery.lower()})
    assert [k["kind"] for k in keys if k["in_use"]] == ["recovery"]


def test_prompts_on_a_terminal_and_ctrl_c_interrupts(roost: Roost) -> None:
    env = {k: v for k, v in roost.env.items() if k != "ROOST_PASSWORD"}
    typed = PASSWORD.encode() + b"\n"
    prompts = [(b"New repository passphrase: ", typed), (b"Repeat it: ", typed)]
    code, shown = run_on_terminal(["init"], env, prompts)
    assert code == 0, shown
    assert b"RECOVERY KEY" in shown and PASSWORD.encode() not in shown  # typed without echo
    code, shown = run_on_terminal(["snapshots"], env, [(b"Repository passphrase: ", typed)])
    assert (code, shown.splitlines()[-1]) == (0, b"0 snapshots")
    code, shown = run_on_terminal(["snapshots"], env, [(b"Repository passphrase: ", b"\x03")])
    assert (code, shown.splitlines()[-1]) == (130, b"roost: interrupted")
    assert b"Traceback" not in shown


def test_benchmark_reports_four_speeds(roost: Roost) -> None:
    result = roost.json("benchmark", "--seconds", "0.05", "--size-mib", "4")
    speeds = ("fastcdc_gbps", "blake3_keyed_gbps", "zstd3_gbps", "aes256gcm_gbps")
    assert all(result[name] > 0 for name in speeds), result


def test_demo_protects_a_directory_and_runs_incrementally(tmp_path: Path) -> None:
    protect = tmp_path / "protect"
    write_files(protect, {"doc.txt": b"hello", "sub/data.bin": os.urandom(50_000)})
    home = protect / "roost-data"  # inside what it protects: must keep itself out
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update(ROOST_HOME=str(home), ROOST_PROTECT=str(protect), ROOST_KDF_PROFILE="test")

    def demo() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "roost.cli.demo"],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    first = demo()
    passphrase = home / "passphrase"
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    assert first.count("RECOVERY KEY") == 1
    assert f"export ROOST_REPO={home / 'repository'}" in first
    second = demo()
    assert "RECOVERY KEY" not in second

    roost = Roost(home / "repository", passphrase.read_text().strip())
    snaps = roost.json("snapshots")
    assert len(snaps) == 2 and snaps[1]["parent"] == snaps[0]["id"]
    assert snaps[1]["summary"]["files_unchanged"] == 2
    assert snaps[1]["summary"]["bytes_read"] == 0
    listed = {entry["path"] for entry in roost.json("ls", "latest", protect)}
    assert listed == {f"{protect}/{rel}" for rel in ("doc.txt", "sub", "sub/data.bin")}

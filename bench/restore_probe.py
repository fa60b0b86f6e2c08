"""Roost's restore alone, into a fresh ext4 image each time: wall, user and system time.

A quicker loop than ``make bench`` while working on the restore (one tool, one step)::

    .venv/bin/python bench/restore_probe.py --runs 5
    .venv/bin/python bench/restore_probe.py --runs 1 --save-metadata /tmp/before.pickle
    .venv/bin/python bench/restore_probe.py --runs 1 --compare-metadata /tmp/before.pickle
    .venv/bin/python bench/restore_probe.py --runs 1 --py-spy /tmp/restore.txt

The first call backs up the dataset into ``--repo`` (untimed); later calls reuse it. Each run
mounts a new image (restoretarget.py, as the benchmark does), restores ``latest`` into it,
counts the files and removes it. ``--save-metadata`` keeps every restored entry's type and
mode, owner, size, times, symlink target, xattrs, hard link group and content hash;
``--compare-metadata`` checks a later restore against such a file (the restore of a changed
Roost must give every entry exactly what the earlier one gave).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import stat
import statistics
import subprocess
import sys
import time
from pathlib import Path

from datasets import FileEntry
from restoretarget import fresh_target, plan_image
from tools import PASSWORD, Roost

DEFAULT_DATASET = Path("/var/tmp/roost-bench/datasets/source")
DEFAULT_WORK = Path("/var/tmp/roost-restore-probe")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="repository and image")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--roost", default=Roost().executable(), help="the roost executable")
    parser.add_argument(
        "--src", type=Path, metavar="DIR", help="run Roost from this source tree (PYTHONPATH)"
    )
    parser.add_argument("--save-metadata", type=Path, metavar="FILE")
    parser.add_argument("--compare-metadata", type=Path, metavar="FILE")
    parser.add_argument(
        "--py-spy", metavar="FILE", help="record the restore with py-spy (collapsed stacks)"
    )
    return parser.parse_args()


def entries_of(root: Path) -> list[FileEntry]:
    found: list[FileEntry] = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            found.append(FileEntry(os.path.relpath(path, root), os.lstat(path).st_size))
    return found


def metadata(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry's restored metadata and content hash, by path below ``root``."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}  # hard links: the first path of each inode
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            xattrs = sorted(
                (key, os.getxattr(path, key, follow_symlinks=False))
                for key in os.listxattr(path, follow_symlinks=False)
            )
            target = os.readlink(path) if os.path.islink(path) else None
            digest = _digest(path) if os.path.isfile(path) and not os.path.islink(path) else None
            link = inodes.setdefault(st.st_ino, path) if st.st_nlink > 1 else None
            found[os.path.relpath(path, root)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size if not os.path.isdir(path) else 0,
                st.st_mtime_ns,
                _atime(st.st_mode, st.st_atime_ns),
                target,
                xattrs,
                digest,
                link and os.path.relpath(link, root),
            )
    return found


def _atime(mode: int, atime_ns: int | None) -> int | None:
    """Only regular files keep their restored atime here: listing a directory and reading a
    symlink (as this check does) move theirs."""
    return atime_ns if stat.S_ISREG(mode) else None


def _digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def ensure_backup(args: argparse.Namespace, env: dict[str, str]) -> None:
    if (args.work / "repo" / "config").exists():
        return
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"backing up {args.dataset} into {args.work / 'repo'} (untimed)", flush=True)
    subprocess.run([args.roost, "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        [args.roost, "backup", str(args.dataset), "--json"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


# runs the roost command line in a Python that reports, at exit, the CPU time of its own
# process (the walk, the batching, the accounting) apart from its worker processes
_SPLIT = (
    "import atexit, resource, sys\n"
    "def report():\n"
    "    own = resource.getrusage(resource.RUSAGE_SELF)\n"
    "    sys.stderr.write(f'main-process-cpu {own.ru_utime} {own.ru_stime}\\n')\n"
    "atexit.register(report)\n"
    "from roost.cli.main import main\n"
    "sys.argv[0] = 'roost'\n"
    "main()\n"
)


def restore_once(args: argparse.Namespace, env: dict[str, str], target: Path) -> tuple[float, ...]:
    """(wall, user, system, main process user, main process system) of one restore."""
    python = Path(args.roost).parent / "python"
    argv = [str(python), "-c", _SPLIT, "restore", "latest", "--target", str(target), "--json"]
    if args.py_spy:
        spy = Path(sys.executable).parent / "py-spy"
        argv = [str(spy), "record", "-s", "-r", "250", "-f", "raw", "-o", args.py_spy, "--", *argv]
    os.sync()
    started = time.perf_counter()
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"restore failed: exit {os.waitstatus_to_exitcode(status)}: {errors}")
    own = [line.split()[1:] for line in errors.splitlines() if line.startswith("main-process-cpu")]
    main_user, main_sys = (float(value) for value in own[-1]) if own else (0.0, 0.0)
    return wall, usage.ru_utime, usage.ru_stime, main_user, main_sys


def main() -> None:
    args = parse()
    env = {
        **os.environ,
        "ROOST_REPO": str(args.work / "repo"),
        "ROOST_PASSWORD": PASSWORD,
    }
    if args.src:  # ahead of the venv's editable install; the worker processes inherit it
        env["PYTHONPATH"] = str(args.src.absolute())
    ensure_backup(args, env)
    entries = entries_of(args.dataset)
    plan = plan_image(entries)
    mount = args.work / "restore"
    figures: list[tuple[float, ...]] = []
    for number in range(1, args.runs + 1):
        mount.mkdir(exist_ok=True)
        with fresh_target(mount, plan, print) as kind:
            wall, user, system, main_user, main_sys = restore_once(args, env, mount)
            restored = mount / args.dataset.relative_to(args.dataset.anchor)
            files = len(entries_of(restored))
            print(
                f"run {number}: wall {wall:6.2f} s  user {user:6.2f} s  sys {system:6.2f} s  "
                f"cpu {user + system:6.2f} s  main process {main_user + main_sys:5.2f} s  "
                f"files {files} / {len(entries)}  ({kind})",
                flush=True,
            )
            if files != len(entries):
                raise SystemExit("wrong number of files restored")
            if args.save_metadata or args.compare_metadata:
                metadata_check(args, restored)
            figures.append((wall, user, system, user + system, main_user + main_sys))
    medians = [statistics.median(column) for column in zip(*figures, strict=True)]
    print(
        "median: wall {:.2f} s  user {:.2f} s  sys {:.2f} s  cpu {:.2f} s  "
        "main process {:.2f} s".format(*medians)
    )


def metadata_check(args: argparse.Namespace, restored: Path) -> None:
    """Save the restored tree's metadata, or compare it with a saved one (untimed)."""
    got = metadata(restored)
    if args.save_metadata:
        args.save_metadata.write_bytes(pickle.dumps(got))
        print(f"  metadata of {len(got)} entries saved to {args.save_metadata}")
    if not args.compare_metadata:
        return
    want = {
        name: (*fields[:5], _atime(fields[0], fields[5]), *fields[6:])
        for name, fields in pickle.loads(args.compare_metadata.read_bytes()).items()
    }
    wrong = [name for name in want if want[name] != got.get(name)]
    extra = sorted(set(got) - set(want))
    for name in wrong[:10]:
        print(f"  differs: {name}: {want[name]} != {got.get(name)}")
    if wrong or extra:
        raise SystemExit(f"metadata differs for {len(wrong)} entries, {len(extra)} extra")
    print(f"  metadata and content of all {len(want)} entries match {args.compare_metadata}")


if __name__ == "__main__":
    main()

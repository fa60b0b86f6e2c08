"""The scanner's totals (the progress bar's 100%) equal what the archiver then considers."""

from __future__ import annotations

import os
from pathlib import Path

from roost.engine.archiver import Archiver, BackupOptions
from roost.engine.filters import ExcludeRules
from roost.engine.keys import KdfParams
from roost.engine.progress import BackupProgress
from roost.engine.repository import Repository
from roost.engine.scanner import Scanner
from roost.storage.memory import MemoryBackend

WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)


class Totals(BackupProgress):
    def __init__(self) -> None:
        self.reported: list[tuple[int, int]] = []

    def scan_finished(self, files: int, size: int) -> None:
        self.reported.append((files, size))


def test_scan_totals_match_the_backup_with_the_same_rules(tmp_path: Path) -> None:
    sizes = {"a.txt": 10, "skip.tmp": 20, "sub/b.bin": 3000, "sub/c.txt": 30, "cache/d": 40}
    sizes["deep/er/e.txt"] = 50
    for rel, size in sizes.items():
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    os.symlink("a.txt", tmp_path / "src" / "link")
    sources = [os.fsencode(tmp_path / "src")]
    rules = ExcludeRules(["*.tmp", "cache/"], larger_than=1000)

    totals = Totals()
    Scanner(sources, rules, totals).run()
    repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
    _, summary = Archiver(repo, BackupOptions(rules=rules)).run(sources)

    files = summary.files_new + summary.files_changed + summary.files_unchanged
    assert totals.reported == [(files, summary.bytes_total)] == [(3, 10 + 30 + 50)]


def test_without_patterns_the_totals_still_match_the_backup(tmp_path: Path) -> None:
    sizes = {"a.txt": 10, "big.bin": 3000, "sub/b": 20, "sub/deeper/c": 30, "empty/.keep": 0}
    for rel, size in sizes.items():
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    os.symlink("sub", tmp_path / "src" / "dir-link")  # a link to a directory: not followed
    os.symlink("a.txt", tmp_path / "src" / "file-link")  # a link to a file: not a file
    os.mkfifo(tmp_path / "src" / "fifo")
    sources = [os.fsencode(tmp_path / "src")]
    for rules in (ExcludeRules(), ExcludeRules(larger_than=1000, one_file_system=True)):
        totals = Totals()
        Scanner(sources, rules, totals).run()
        repo, _ = Repository.init(MemoryBackend(), "pw", kdf=WEAK)
        _, summary = Archiver(repo, BackupOptions(rules=rules)).run(sources)
        files = summary.files_new + summary.files_changed + summary.files_unchanged
        assert totals.reported == [(files, summary.bytes_total)]
    assert totals.reported == [(4, 10 + 20 + 30)]  # the last rules: big.bin is too big


def test_a_stopped_scan_reports_nothing(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    totals = Totals()
    scanner = Scanner([os.fsencode(tmp_path)], ExcludeRules(), totals)
    scanner.stop()
    scanner.run()
    assert totals.reported == []

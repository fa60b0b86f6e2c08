"""The scanner: counts what a backup will consider, so progress can show a total and an ETA.

It runs in its own thread next to the archiver, applying the same ``ExcludeRules`` the same
way (patterns on the path relative to its source, the size limit on regular files, no descent
into other file systems with ``one_file_system``), and reports through
``BackupProgress.scan_finished``. Errors are ignored: the archiver reports them as missed files.
"""

from __future__ import annotations

import os
import stat
import threading

from roost.engine.filters import ExcludeRules
from roost.engine.progress import BackupProgress


class Scanner:
    """Counts files and bytes below ``sources`` in a daemon thread until done or stopped."""

    def __init__(self, sources: list[bytes], rules: ExcludeRules, progress: BackupProgress):
        self.sources = sources
        self.rules = rules
        self.progress = progress
        self.files = 0
        self.size = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, daemon=True, name="roost-scanner")

    def start(self) -> Scanner:
        self._thread.start()
        return self

    def wait(self) -> tuple[int, int]:
        """Block until the scan is complete; return (files, bytes)."""
        self._thread.join()
        return self.files, self.size

    def stop(self) -> None:
        """Stop counting (a scan still running when the backup ends is of no use)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Scanner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        """Count everything, then report; what the thread runs (callable directly, too)."""
        for source in self.sources:
            try:
                st = os.lstat(source)
            except OSError:
                continue
            self._visit(source, b"", st, st.st_dev)
            if self._stop.is_set():
                return
        self.progress.scan_finished(self.files, self.size)

    def _visit(self, path: bytes, rel: bytes, st: os.stat_result, root_dev: int) -> None:
        if stat.S_ISREG(st.st_mode):
            if not self.rules.excludes_size(st.st_size):
                self.files += 1
                self.size += st.st_size
        elif stat.S_ISDIR(st.st_mode) and not self._other_fs(st, root_dev):
            self._scan_dir(path, rel, root_dev)

    def _scan_dir(self, path: bytes, rel: bytes, root_dev: int) -> None:
        if not self.rules.patterns:
            self._scan_dir_unfiltered(path, root_dev)
            return
        stack = [(path, rel)]
        while stack and not self._stop.is_set():
            directory, directory_rel = stack.pop()
            for entry_path, entry_rel, st in self._entries(directory, directory_rel):
                if stat.S_ISDIR(st.st_mode):
                    if not self._other_fs(st, root_dev):
                        stack.append((entry_path, entry_rel))
                else:
                    self._visit(entry_path, entry_rel, st, root_dev)

    def _scan_dir_unfiltered(self, path: bytes, root_dev: int) -> None:
        """:meth:`_scan_dir` without path patterns, the common case, at twice the speed.

        No relative paths are built, and only regular files are stat'ed (``scandir`` tells
        directories apart; with ``one_file_system`` they are stat'ed for their device): an
        agent counts before it backs up, so this is time added to every backup.
        """
        stack = [path]
        one_file_system, larger_than = self.rules.one_file_system, self.rules.larger_than
        while stack and not self._stop.is_set():
            try:
                with os.scandir(stack.pop()) as it:
                    for entry in it:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                st = entry.stat(follow_symlinks=False) if one_file_system else None
                                if st is None or st.st_dev == root_dev:
                                    stack.append(entry.path)
                            elif entry.is_file(follow_symlinks=False):
                                size = entry.stat(follow_symlinks=False).st_size
                                if larger_than is None or size <= larger_than:
                                    self.files += 1
                                    self.size += size
                        except OSError:
                            continue  # gone since listed: the archiver reports what it misses
            except OSError:
                continue

    def _other_fs(self, st: os.stat_result, root_dev: int) -> bool:
        return self.rules.one_file_system and st.st_dev != root_dev

    def _entries(self, path: bytes, rel: bytes) -> list[tuple[bytes, bytes, os.stat_result]]:
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            return []
        found = []
        for entry in entries:
            entry_rel = rel + b"/" + entry.name if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not self.rules.excludes_path(entry_rel, stat.S_ISDIR(st.st_mode)):
                found.append((entry.path, entry_rel, st))
        return found

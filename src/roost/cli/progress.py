"""Rich progress bars driven by the engine's BackupProgress / RestoreProgress callbacks.

The bars go to stderr and only when it is a terminal; with ``--json`` or in a pipe the engine
gets the no-op callbacks. Callbacks may come from worker threads (restore writes files in a
pool, the backup scanner runs in its own thread), so counters are guarded by a lock. Rich's
progress module is imported only when a bar is shown.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from roost.cli.output import stderr_console
from roost.engine.progress import BackupProgress, RestoreProgress

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn


def files_column() -> ProgressColumn:
    """``12/340 files``, or ``12 files`` while the total is not known yet."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class FilesColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            done = task.fields.get("files", 0)
            total = task.fields.get("files_total")
            return Text(f"{done}/{total} files" if total is not None else f"{done} files")

    return FilesColumn()


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress | None]:
    """A live bar on stderr when ``enabled`` and stderr is a terminal, else None."""
    if not enabled:  # --json: no console needed at all
        yield None
        return
    console = stderr_console()
    if not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        files_column(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        yield bar


class _Counter:
    """One task of a bar: bytes advance the bar, files are counted in a field."""

    def __init__(self, bar: Progress, description: str) -> None:
        self._bar = bar
        self._task = bar.add_task(description, total=None, files=0, files_total=None)
        self._files = 0
        self._lock = threading.Lock()

    def set_total(self, files: int, size: int) -> None:
        self._bar.update(self._task, total=size, files_total=files)

    def add_bytes(self, count: int) -> None:
        self._bar.advance(self._task, count)

    def add_file(self, count: int = 1) -> None:
        with self._lock:
            self._files += count
            files = self._files
        self._bar.update(self._task, files=files)


class BackupBar(BackupProgress):
    def __init__(self, bar: Progress) -> None:
        self._counter = _Counter(bar, "backup")

    def scan_finished(self, files: int, size: int) -> None:
        self._counter.set_total(files, size)

    def bytes_done(self, count: int) -> None:
        self._counter.add_bytes(count)

    def file_done(self, path: bytes, state: str) -> None:
        self._counter.add_file()

    def files_done(self, count: int) -> None:
        self._counter.add_file(count)


class RestoreBar(RestoreProgress):
    def __init__(self, bar: Progress) -> None:
        self._counter = _Counter(bar, "restore")

    def restore_started(self, files: int, size: int) -> None:
        self._counter.set_total(files, size)

    def bytes_done(self, count: int) -> None:
        self._counter.add_bytes(count)

    def file_done(self, path: bytes) -> None:
        self._counter.add_file()

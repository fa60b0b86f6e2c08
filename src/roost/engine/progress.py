"""Progress callbacks for backup and restore; every method defaults to a no-op."""

from __future__ import annotations


class BackupProgress:
    """Receives events from the archiver; subclass and override what you display."""

    def scan_finished(self, files: int, size: int) -> None:
        """The scanner counted ``files`` files holding ``size`` bytes to consider."""

    def file_started(self, path: bytes, size: int) -> None:
        """A file is about to be read."""

    def bytes_done(self, count: int) -> None:
        """``count`` more bytes were read (or skipped as unchanged)."""

    def file_done(self, path: bytes, state: str) -> None:
        """A file finished: state is 'new', 'changed' or 'unchanged'."""

    def files_done(self, count: int) -> None:
        """``count`` more files finished at once: a batch the scan workers answered.

        Files read in this process are reported one by one (:meth:`file_done`), the workers'
        in one call per batch: a call per file cost the agent ~2 us each on the thread that
        applies every worker's answers. A display counting files overrides both.
        """

    def missed(self, path: bytes, reason: str) -> None:
        """A file or directory could not be read completely."""

    def backlog(self, count: int) -> None:
        """``count`` bytes of new data have been read but not yet stored.

        Reading runs ahead of uploads (bounded); progress that should follow the transfer,
        e.g. over a throttled link, subtracts this from the bytes read.
        """


class RestoreProgress:
    def restore_started(self, files: int, size: int) -> None:
        """The restore will write ``files`` files holding ``size`` bytes."""

    def bytes_done(self, count: int) -> None:
        """``count`` more bytes were written."""

    def file_done(self, path: bytes) -> None:
        """One entry was restored."""

    def warning(self, path: bytes, message: str) -> None:
        """Something about one entry could not be restored exactly."""

"""Spool files in tests: one holding given bytes, and the spool files a process still holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest

from roost.storage.spool import open_spool


def spooled(data: bytes, directory: str | None = None) -> BinaryIO:
    """An unnamed spool file holding ``data``, positioned at its end (as a builder leaves it)."""
    file = open_spool(directory)
    file.write(data)
    file.flush()
    return file


def open_spool_files(directory: Path | str) -> list[str]:
    """The files without a name, made in ``directory``, this process still holds (/proc).

    Spool files have no name (O_TMPFILE, or unlinked at once), so /proc shows them as
    ``directory/#inode (deleted)`` or ``directory/.tmp-spool-... (deleted)``.
    """
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc to see open files")
    links = []
    for fd in os.listdir(fds):
        try:
            links.append(os.readlink(fds / fd))
        except OSError:
            continue  # the descriptor listdir itself used, closed by now
    return [
        link for link in links if link.startswith(f"{directory}/") and link.endswith(" (deleted)")
    ]

"""What a restore does where the target already has an entry of the snapshot's name.

``--conflict`` chooses: ``overwrite`` (remove it and write), ``skip`` (keep it), ``rename``
(write beside it, under a free ``.restored-<time>`` name) or ``if-newer`` (overwrite when the
snapshot's entry is newer, else skip). A directory in the way of a non-directory is always
kept: removing it could delete a tree the user made.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime
from typing import Literal

CONFLICT_POLICIES = ("overwrite", "skip", "rename", "if-newer")

# what became of the name: free, or taken and then replaced, kept, renamed around, or a
# directory that is kept
Resolution = Literal["free", "replaced", "skipped", "renamed", "directory"]


def resolve(path: bytes, mtime_ns: int, policy: str) -> tuple[bytes | None, Resolution]:
    """Where to write an entry (None: nowhere) whose snapshot mtime is ``mtime_ns``.

    With ``replaced`` the existing entry has been removed already.
    """
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return path, "free"
    if stat.S_ISDIR(existing.st_mode):
        return None, "directory"
    if policy == "if-newer":
        policy = "overwrite" if mtime_ns > existing.st_mtime_ns else "skip"
    if policy == "skip":
        return None, "skipped"
    if policy == "rename":
        return free_name(path), "renamed"
    os.unlink(path)
    return path, "replaced"


def free_name(path: bytes) -> bytes:
    """``path`` with a ``.restored-<time>`` suffix that names nothing yet."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = path + f".restored-{stamp}".encode()
    counter = 1
    while os.path.lexists(candidate):
        counter += 1
        candidate = path + f".restored-{stamp}-{counter}".encode()
    return candidate


__all__ = ["CONFLICT_POLICIES", "Resolution", "free_name", "resolve"]

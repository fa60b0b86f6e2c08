"""DESIGN.md §1 step 7: a file the agent cannot read is a *missed file* with its reason, the job
ends ``succeeded_with_errors``, and the next backup reads it again although nothing about it
changed. The agent runs as uid/gid 65534 (through ``setpriv``), so a root-owned 0600 file is
really unreadable; the second agent process gets CAP_DAC_READ_SEARCH instead, so the file's
metadata (size, mtime, ctime, inode, mode) stays exactly as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.workflow.support import Fleet, describe_job, file_identity, write_files

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
AS_NOBODY = [SETPRIV or "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
WITH_READ_CAP = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


def _require_unprivileged_agent() -> None:
    """Skip, with the exact reason, when an agent cannot run as 65534 here."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the agent as uid 65534 and to own the unreadable file")
    if SETPRIV is None:
        pytest.skip("setpriv (util-linux) is not installed")
    probe = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", "import roost.agent.runner"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"uid {NOBODY} cannot run {sys.executable} with roost importable "
            f"(is /root or the venv not traversable?): {probe.stderr.strip()[-300:]}"
        )
    caps = subprocess.run(
        [*AS_NOBODY, *WITH_READ_CAP, "true"], capture_output=True, text=True, check=False
    )
    if caps.returncode != 0:
        pytest.skip(f"setpriv cannot grant CAP_DAC_READ_SEARCH here: {caps.stderr.strip()}")


def _owned_by_nobody(path: Path, mode: int) -> Path:
    path.mkdir(parents=True)
    os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)
    return path


def test_unreadable_files_are_missed_then_retried_even_if_unchanged(
    fleet: Fleet, open_dir: Path
) -> None:
    _require_unprivileged_agent()
    admin = fleet.admin
    source = write_files(open_dir / "src", {"public.txt": b"anyone may read this\n"})
    secret = source / "secret.bin"
    content = os.urandom(100_000)
    secret.write_bytes(content)
    secret.chmod(0o600)  # owned by root: uid 65534 cannot open it
    home = _owned_by_nobody(open_dir / "agent-home", 0o700)
    name = fleet.name("agent")
    agent = fleet.start_agent(name, home=home, command_prefix=AS_NOBODY)
    set_name = fleet.name("set")
    admin.create_set(set_name, name, [str(source)])
    before = file_identity(secret)

    first = fleet.run_backup(set_name, "succeeded_with_errors")
    assert admin.missed(first["id"]) == [{"path": str(secret), "reason": "permission denied"}]
    assert first["summary"]["files_missed"] == 1
    assert first["summary"]["files_new"] == 1  # public.txt
    assert "1 files could not be read; the next backup reads them again" in [
        line["message"] for line in first["log"]
    ], describe_job(first)
    listed = admin.ls(set_name, first["snapshot_id"], str(source))
    assert [e["name"] for e in listed] == ["public.txt"]  # a missed file is not in the snapshot

    # The same agent (home, credentials, uid) again, now able to read any file.
    fleet.stop(agent)
    fleet.start_agent(name, home=home, command_prefix=[*AS_NOBODY, *WITH_READ_CAP])
    assert file_identity(secret) == before  # nothing about the file changed...

    second = fleet.run_backup(set_name, "succeeded")
    assert admin.missed(second["id"]) == []
    assert second["level"] == "incremental"  # ...and the backup compares with its parent...
    summary = second["summary"]
    assert (summary["files_new"], summary["files_unchanged"], summary["files_missed"]) == (1, 1, 0)
    assert summary["bytes_read"] == len(content)  # ...yet reads exactly the missed file again
    entries = {e["name"]: e for e in admin.ls(set_name, second["snapshot_id"], str(source))}
    assert sorted(entries) == ["public.txt", "secret.bin"]
    assert (entries["secret.bin"]["size"], entries["secret.bin"]["mode"]) == (len(content), 0o600)
    assert file_identity(secret) == before

    # The file's exact bytes come back (restored by the same unprivileged agent).
    parent = _owned_by_nobody(open_dir / "restores", 0o755)
    target = parent / "target"
    fleet.restore(set_name, target, paths=[str(secret)])
    back = target / secret.relative_to("/")
    assert back.read_bytes() == content
    assert (back.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in back.parent.iterdir()) == ["secret.bin"]  # only what was asked

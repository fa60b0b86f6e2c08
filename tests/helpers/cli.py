"""Run the installed ``roost`` console script as a real process, as a user or a tool would.

``Roost(repo, password)`` runs commands with a clean environment: the cheap test KDF, UTC as
the time zone, ROOST_REPO and ROOST_PASSWORD set, stdin not a terminal (so nothing prompts
and no progress bar is drawn). ``as_nobody=True`` runs the command as uid/gid 65534 through
``setpriv``. ``tree_digest`` fingerprints a directory to prove a failed command changed nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOST = shutil.which("roost", path=os.path.dirname(sys.executable))
SETPRIV = shutil.which("setpriv")
NOBODY = 65534
PASSWORD = "correct horse battery staple"
_DROPPED = ("ROOST_", "COLUMNS", "LINES")


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()


class Roost:
    def __init__(self, repo: Path, password: str = PASSWORD, **env: str) -> None:
        assert ROOST is not None, "the roost console script is not installed in this venv"
        base = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
        self.repo = repo
        self.env = {
            **base,
            "ROOST_KDF_PROFILE": "test",
            "ROOST_REPO": str(repo),
            "ROOST_PASSWORD": password,
            "TZ": "UTC",
            **env,
        }

    def __call__(
        self,
        *args: str | Path,
        env: dict[str, str] | None = None,
        unset: tuple[str, ...] = (),
        as_nobody: bool = False,
    ) -> Result:
        assert ROOST is not None
        command = [ROOST, *map(str, args)]
        if as_nobody:
            assert SETPRIV is not None
            ids = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            command = [SETPRIV, *ids, *command]
        merged = {k: v for k, v in {**self.env, **(env or {})}.items() if k not in unset}
        done = subprocess.run(
            command,
            env=merged,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            timeout=120,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str | Path, **kwargs: Any) -> Result:
        """Run a command that must succeed; its output is in the assertion message if not."""
        result = self(*args, **kwargs)
        assert result.code == 0, f"roost {args} exited {result.code}: {result.stderr}"
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str | Path, **kwargs: Any) -> Any:
        return self.ok(*args, "--json", **kwargs).json()


def tree_digest(root: Path) -> dict[str, str]:
    """Every path below ``root`` with its type and, for files, a hash of the content."""
    found: dict[str, str] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.is_file():
            found[rel] = "dir" if path.is_dir() else "other"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_on_terminal(
    args: list[str], env: dict[str, str], script: list[tuple[bytes, bytes]], timeout: float = 30
) -> tuple[int, bytes]:
    """Run roost with a pseudo-terminal as its controlling terminal, like a user at a shell.

    ``script`` is a list of (text to wait for, keys to type); b"\\x03" is Ctrl-C. Returns the
    exit code and everything the terminal showed.
    """
    assert ROOST is not None
    pid, fd = pty.fork()
    if pid == 0:  # the child: SIGINT as in an interactive shell, even if our parent ignores it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execve(ROOST, [ROOST, *args], env)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        for wait_for, keys in script:
            while wait_for not in shown:
                shown += _read_some(fd, deadline)
            os.write(fd, keys)
        while chunk := _read_some(fd, deadline):
            shown += chunk
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown


def _read_some(fd: int, deadline: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        raise TimeoutError("the terminal showed nothing more before the deadline")
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the child closed the terminal
        return b""

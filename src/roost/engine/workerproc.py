"""Worker processes for backup and restore: started, connected and stopped the same way.

A worker is a plain interpreter (not ``multiprocessing``'s spawn, which re-imports the whole
command line in every worker and starts a resource-tracker process: ~20 MB more per worker)
that runs one module's ``run_worker`` on one end of a socket pair. ``-P`` keeps the current
directory, which may be the tree being backed up or restored into, off ``sys.path``. The
first message on the socket is the worker's setup, key material included: never argv or the
environment. A worker dies with its parent, and stops at end of file on its socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from roost.memory import tune_allocator

_PR_SET_PDEATHSIG = 1


def spawn(module: str, setup: object) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start ``module.run_worker`` in a new interpreter and send it ``setup``."""
    command = f"import sys; from {module} import run_worker; run_worker(sys.argv[1])"
    ours, theirs = socket.socketpair()
    with theirs:
        process = subprocess.Popen(
            [sys.executable, "-P", "-c", command, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
    conn = Connection(ours.detach())
    conn.send((setup, os.getpid()))
    return process, conn


def connect(fd: str) -> tuple[Connection, Any]:
    """In the worker: its socket and setup, after arranging to die with the parent."""
    tune_allocator()  # as the main process: big buffers go back to the OS when freed
    conn = Connection(int(fd))
    setup, parent = conn.recv()
    die_with_parent(parent)
    return conn, setup


def stop(process: subprocess.Popen[bytes], conn: Connection, timeout: float = 10.0) -> None:
    """Wait for the process to end (kill it after ``timeout``) and close its socket."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    conn.close()


def report_failure(conn: Connection, exc: BaseException) -> None:
    """Send ``("failed", exc)``, so the parent fails with the real cause."""
    with contextlib.suppress(Exception):
        conn.send(("failed", _portable(exc)))


def default_processes() -> int:
    """One worker per core (a third on 2 cores was not faster and cost ~40 MB more).

    None on Windows, where a socket cannot be handed to a child by descriptor: the same
    work then runs on threads.
    """
    if sys.platform == "win32":
        return 0
    return max(2, os.cpu_count() or 2)


def die_with_parent(parent: int) -> None:
    """A worker must not outlive its backup or restore (killed agent, SIGKILLed command)."""
    if sys.platform.startswith("linux"):
        try:
            if ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # other platforms: poll
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="roost-parent-watch").start()


def _portable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


__all__ = ["connect", "default_processes", "die_with_parent", "report_failure", "spawn", "stop"]

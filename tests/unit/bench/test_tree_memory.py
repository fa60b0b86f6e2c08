"""The benchmark's memory figures: summed RSS and PSS of a process tree (bench/measure.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))  # the benchmark's modules import each other by plain name

import measure  # noqa: E402
from agentpath import children  # noqa: E402

MiB = 1024 * 1024
# a parent holding 40 MiB that starts a child holding 40 MiB more, then both wait; each says
# "ready" (on the same pipe: the child inherits it) once its 40 MiB are written
PROGRAM = """
import subprocess, sys, time
held = b"x" * (40 * 2**20)
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child", ""])
print("ready", flush=True)
time.sleep(30)
"""


def test_tree_rss_and_pss_add_up_the_processes_of_a_tree() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, "parent", PROGRAM], stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        # both processes, not only the parent: the child's PSS was once read while it was
        # still writing its 40 MiB
        assert [parent.stdout.readline() for _ in range(2)] == [b"ready\n"] * 2
        [child] = children(parent.pid)
        rss, pss = measure.tree_rss(parent.pid), measure.tree_rss(parent.pid, "Pss:")
        assert 80 * MiB <= pss < rss  # the interpreter's shared pages once in PSS
        assert measure.tree_rss(child, "Pss:") >= 40 * MiB
    finally:
        for pid in children(parent.pid):
            subprocess.run(["kill", str(pid)], check=False)
        parent.kill()
        parent.wait()

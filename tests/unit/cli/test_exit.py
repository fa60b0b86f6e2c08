"""The console script's exit: no last collection over the live objects, output complete."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from roost.memory import (
    COLLECT_AFTER,
    fewer_collections,
    freeze_imported,
    skip_exit_collection,
)


def test_skip_exit_collection_freezes_the_live_objects() -> None:
    try:
        skip_exit_collection()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_freeze_imported_leaves_later_garbage_collectable() -> None:
    class Cycle:
        pass

    try:
        freeze_imported()
        frozen = gc.get_freeze_count()
        made = Cycle()
        made.me = made  # type: ignore[attr-defined]
        del made
        assert gc.collect() > 0  # garbage made after the freeze is still collected
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_the_console_script_still_exits_with_its_code_and_all_output(tmp_path: Path) -> None:
    roost = Path(sys.executable).with_name("roost")
    (tmp_path / "src").mkdir()
    for i in range(50):
        (tmp_path / "src" / f"f{i}").write_text(str(i))
    env = {**os.environ, "ROOST_KDF_PROFILE": "test", "ROOST_PASSWORD": "pw"}
    env["ROOST_REPO"] = str(tmp_path / "repo")
    subprocess.run([roost, "init", "--json"], env=env, check=True, capture_output=True)
    done = subprocess.run(
        [roost, "backup", str(tmp_path / "src"), "--json"], env=env, capture_output=True
    )
    assert done.returncode == 0
    assert json.loads(done.stdout)["files_new"] == 50
    missing = subprocess.run(
        [roost, "backup", str(tmp_path / "nope")], env=env, capture_output=True, text=True
    )
    assert missing.returncode != 0
    assert missing.stderr.startswith("roost: error: source path")


def test_fewer_collections_raises_the_threshold_and_restores_it() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == (COLLECT_AFTER, 20, 100)
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cyclic garbage is still collectable
    assert gc.get_threshold() == before


def test_overlapping_fewer_collections_restore_the_thresholds_only_at_the_end() -> None:
    before = gc.get_threshold()
    first, second = fewer_collections(), fewer_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first ends while the second still runs
    assert gc.get_threshold() == (COLLECT_AFTER, 20, 100)
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before

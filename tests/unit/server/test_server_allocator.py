"""The server's allocator: uploads of whole packs are not mmapped and unmapped buffer by buffer."""

from __future__ import annotations

import sys

import pytest

from roost.engine.repository import RepoConfig
from roost.server import main


def test_threshold_keeps_a_whole_pack_body_off_mmap() -> None:
    assert RepoConfig.__dataclass_fields__["pack_size"].default < main.SERVER_MMAP_THRESHOLD
    assert main.SERVER_MMAP_THRESHOLD <= 32 * 1024 * 1024  # glibc's limit on 64-bit


def test_server_tunes_with_its_own_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    monkeypatch.setattr(
        main, "tune_allocator", lambda mmap_threshold: seen.append(mmap_threshold) or True
    )
    assert main.tune_server_allocator()
    assert seen == [main.SERVER_MMAP_THRESHOLD]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_glibc_accepts_the_threshold() -> None:
    assert main.tune_server_allocator()

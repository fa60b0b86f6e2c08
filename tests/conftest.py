"""Suite-wide fixtures: cheap key derivation and an isolated environment for every test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # makes `tests.helpers` importable


@pytest.fixture(autouse=True)
def _cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_KDF_PROFILE", "test")
    for name in ("ROOST_REPO", "ROOST_PASSWORD"):
        if name in os.environ:
            monkeypatch.delenv(name)

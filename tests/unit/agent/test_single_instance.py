"""One agent per home: a second `roost agent run` on the same home is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.agent.config import single_instance
from roost.agent.errors import AgentAlreadyRunning


def test_second_agent_on_the_same_home_is_refused(tmp_path: Path) -> None:
    with single_instance(tmp_path):
        with pytest.raises(AgentAlreadyRunning) as caught, single_instance(tmp_path):
            pass
        assert str(caught.value) == (
            f"another `roost agent run` is using {tmp_path}; stop it first (one agent per home)"
        )
    with single_instance(tmp_path):  # released when the first agent stopped
        pass

"""Skip a test whose service is missing, unless the run requires that service.

Developers without, say, PostgreSQL get a skip that says why. CI sets
``ROOST_TEST_REQUIRE=postgres,s3,btrfs,chromium`` after starting or installing those, so a
missing service fails the run loudly instead of hiding behind a skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def required(service: str) -> bool:
    wanted = os.environ.get("ROOST_TEST_REQUIRE", "")
    return service in {name.strip() for name in wanted.split(",")}


def skip_unless_required(service: str, reason: str) -> NoReturn:
    if required(service):
        pytest.fail(f"{service} is required in this run (ROOST_TEST_REQUIRE) but {reason}")
    pytest.skip(reason)

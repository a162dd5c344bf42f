"""Suite-wide fixtures: the loopback socket fence and checks for system components.

Set KEYSIDE_REQUIRE_SYSTEM=1 (CI does) to turn a missing system component (Secret Service,
Chromium, Xvfb, network namespace) from a skip into a failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fence  # noqa: E402

fence.install()

REQUIRE_SYSTEM = os.environ.get("KEYSIDE_REQUIRE_SYSTEM") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip the test when a system component is missing, or fail when CI requires it."""
    if condition:
        return
    if REQUIRE_SYSTEM:
        pytest.fail(f"required system component missing: {reason}")
    pytest.skip(reason)


@pytest.fixture
def require():
    """The `need` function as a fixture, for tests that check components at run time."""
    return need


@pytest.fixture(autouse=True)
def _socket_fence():
    """Re-install the fence before every test, in case a plugin restored the socket methods."""
    fence.install()
    yield

"""Validation of the limit dataclasses: guard limits and supervisor settings."""

from __future__ import annotations

import pytest

from keyside.guard import GuardLimits
from keyside.guard.policy import InvalidPolicy
from keyside.host.supervisor import InvalidSupervisorSettings, SupervisorSettings

INVALID = [
    (GuardLimits, InvalidPolicy, {"connect_timeout_s": 0}, "connect_timeout_s"),
    (GuardLimits, InvalidPolicy, {"total_timeout_s": -1.0}, "total_timeout_s"),
    (GuardLimits, InvalidPolicy, {"max_concurrent": 0}, "max_concurrent"),
    (GuardLimits, InvalidPolicy, {"max_redirects": -1}, "max_redirects"),
    (GuardLimits, InvalidPolicy, {"max_response_bytes": True}, "max_response_bytes"),
    (SupervisorSettings, InvalidSupervisorSettings, {"handshake_timeout_s": 0}, "handshake_timeout_s"),
    (SupervisorSettings, InvalidSupervisorSettings, {"backoff_max_s": "2"}, "backoff_max_s"),
    (SupervisorSettings, InvalidSupervisorSettings, {"max_quick_failures": 0}, "max_quick_failures"),
]


@pytest.mark.parametrize(("cls", "error", "options", "field_name"), INVALID,
                         ids=[f"{case[0].__name__}-{case[3]}" for case in INVALID])
def test_invalid_limit_rejected(cls, error, options, field_name):
    with pytest.raises(error) as caught:
        cls(**options)
    assert field_name in caught.value.message
    assert "default" in caught.value.fix


@pytest.mark.parametrize("options", [
    {},
    {"max_redirects": 0},
    {"connect_timeout_s": 0.3, "read_timeout_s": 1},
], ids=["defaults", "no-redirects", "short-timeouts"])
def test_valid_guard_limits_accepted(options):
    assert GuardLimits(**options)


def test_valid_supervisor_settings_accepted():
    assert SupervisorSettings(handshake_timeout_s=0.5, max_quick_failures=1)

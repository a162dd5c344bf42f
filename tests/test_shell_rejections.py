"""Rejection warnings: a burst per window and reason, then a count of what was left out."""

from __future__ import annotations

import logging

import pytest

from keyside.shell.rejections import REJECTION_LOG_BURST, REJECTION_LOG_INTERVAL_S, RejectionLog


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = RejectionLog(logging.getLogger("test.rejections"), "ipc call rejected", clock)

    with caplog.at_level(logging.WARNING, "test.rejections"):
        for _ in range(REJECTION_LOG_BURST + 7):
            log.warn("origin_not_allowed", "main")
        log.warn("origin_not_allowed", "settings")
        log.warn("ipc_header_missing", "main", "path=/keyside/ipc")
        clock.now += REJECTION_LOG_INTERVAL_S
        log.warn("origin_not_allowed", "main")

    lines = [record.getMessage() for record in caplog.records]
    main_lines = [line for line in lines if line == "ipc call rejected reason=origin_not_allowed window=main"]
    assert len(main_lines) == REJECTION_LOG_BURST + 1
    assert "ipc call rejected reason=origin_not_allowed window=settings" in lines
    assert "ipc call rejected reason=ipc_header_missing window=main path=/keyside/ipc" in lines
    assert "ipc call rejected not logged reason=origin_not_allowed window=main count=7" in lines
    assert lines.index("ipc call rejected not logged reason=origin_not_allowed window=main count=7") == len(lines) - 2

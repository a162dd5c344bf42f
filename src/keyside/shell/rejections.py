"""Rate-limited warnings for rejected requests, so a page or process in a loop cannot flood the log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

# Per (window, reason), the first REJECTION_LOG_BURST rejections in each interval are logged. The
# rest are counted, and the count is logged when the next interval starts.
REJECTION_LOG_INTERVAL_S = 60.0
REJECTION_LOG_BURST = 5


class RejectionLog:
    """Logs `<event> reason=<reason> window=<label> ...` lines with a per-window, per-reason limit."""

    def __init__(self, logger: logging.Logger, event: str, clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._event = event
        self._clock = clock
        self._lock = threading.Lock()
        # (window, reason) -> (interval start, logged in it, left out of it)
        self._counts: dict[tuple[str, str], tuple[float, int, int]] = {}

    def warn(self, reason: str, window: str, details: str = "") -> None:
        """Log one rejection; `details` is appended as more key=value fields."""
        key = (window, reason)
        now = self._clock()
        left_out_before = 0
        with self._lock:
            started, logged, left_out = self._counts.get(key, (now, 0, 0))
            if now - started >= REJECTION_LOG_INTERVAL_S:
                started, logged, left_out_before, left_out = now, 0, left_out, 0
            if logged >= REJECTION_LOG_BURST:
                self._counts[key] = (started, logged, left_out + 1)
                return
            self._counts[key] = (started, logged + 1, left_out)
        if left_out_before:
            self._logger.warning("%s not logged reason=%s window=%s count=%d", self._event, reason, window,
                                 left_out_before)
        suffix = f" {details}" if details else ""
        self._logger.warning("%s reason=%s window=%s%s", self._event, reason, window, suffix)

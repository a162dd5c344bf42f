"""Counters and a ring buffer of recent requests, for `/api/status` and `/api/traffic`.

An entry keeps the method, the path without its query, the status, the duration and the reason of
a rejection. Paths pass through the redactor, so a token or key pasted into a path is masked.
Recording runs on every request, so an entry is a plain tuple until /api/traffic reads it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any, NamedTuple

from keyside.redact import Redactor

# Entries kept for /api/traffic: enough for a status page, small enough to serialise per request.
TRAFFIC_ENTRIES = 200
# A logged path is cut to this many characters.
MAX_LOGGED_PATH_CHARS = 300


class TrafficEntry(NamedTuple):
    time: float  # Unix time of the request's arrival
    method: str
    path: str  # without the query
    status: int
    duration_ms: float
    service: str | None
    reason: str | None  # the error reason, None on success


class TrafficLog:
    """The recent-request ring buffer and the counters since start."""

    def __init__(self, redactor: Redactor):
        self._redactor = redactor
        self._entries: deque[TrafficEntry] = deque(maxlen=TRAFFIC_ENTRIES)
        self.started_monotonic = time.monotonic()
        self.requests = 0
        self.by_status_class: Counter[int] = Counter()  # 2 for 2xx, 4 for 4xx
        self.by_reason: Counter[str] = Counter()
        self.by_service: Counter[str] = Counter()

    def record(self, *, started_wall: float, method: str, raw_path: str, status: int, duration_s: float,
               service: str | None, reason: str | None) -> TrafficEntry:
        # The query is cut off first, so only known values are left to mask.
        path = self._redactor.mask(raw_path.partition("?")[0][:MAX_LOGGED_PATH_CHARS])
        entry = TrafficEntry(started_wall, method, path, status, round(duration_s * 1000, 3), service, reason)
        self._entries.append(entry)
        self.requests += 1
        self.by_status_class[status // 100] += 1
        if reason:
            self.by_reason[reason] += 1
        if service:
            self.by_service[service] += 1
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Return the buffered entries, oldest first."""
        return [entry._asdict() for entry in self._entries]

    def counters(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": {f"{status_class}xx": count for status_class, count in self.by_status_class.items()},
            "by_reason": dict(self.by_reason),
            "by_service": dict(self.by_service),
        }

    @property
    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started_monotonic, 3)

"""Redaction of secret values, tokens and URL queries from text and log records.

Both processes install a RedactingFilter on their log handlers. It works on the final
formatted message, so a secret passed through `%s` arguments or an exception traceback is
masked too.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "[REDACTED]"
# Values shorter than this are not masked: replacing every "a" or "1" in a log line would
# destroy the log and protect nothing, because such a value is not a credential.
MIN_SECRET_CHARS = 4

# A URL query: from "?" after a URL or an absolute path up to whitespace or a quote. Queries
# often carry keys (`?api_key=...`), so logs keep the path only. A path counts when it starts the
# text or follows whitespace, "=", a quote or an opening bracket, as in `path=/v1/x?key=...`.
_URL_QUERY = re.compile(
    r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#\"'<>]*|(?:^|[\s=\"'(\[])/[^\s?#\"'<>]*)\?[^\s\"'<>]*")


class Redactor:
    """A thread-safe set of exact values to mask in any text."""

    def __init__(self, values: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for value in values:
            self.add(value)

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET_CHARS:
            return
        with self._lock:
            self._values.add(value)
            self._compile()

    def discard(self, value: str | None) -> None:
        with self._lock:
            self._values.discard(value or "")
            self._compile()

    def _compile(self) -> None:
        # Longest first, so a secret that contains another secret is masked whole.
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        """Return `text` with every known value replaced by MASK and URL queries removed."""
        return strip_url_queries(self.mask(text))

    def mask(self, text: str) -> str:
        """Return `text` with every known value replaced by MASK, keeping URL queries."""
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text


def strip_url_queries(text: str) -> str:
    """Replace the query of every URL in `text` with `?[query removed]`."""
    return _URL_QUERY.sub(lambda m: m.group(1) + "?[query removed]", text)


class RedactingFilter(logging.Filter):
    """A logging filter that formats the record, then redacts the final message."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = self.redactor.redact(message)
        record.args = None
        return True

"""Removal of exact secret values from response headers, bodies and error messages.

An upstream can send a key back: an echo endpoint, an error that quotes the request, a debug
header. The sidecar replaces every known value with MASK before anything reaches the caller. In a
stream, a value can arrive split across two chunks, so the scrubber holds back a short tail that
could be the start of a value and emits it once the next chunk shows whether it is one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from keyside.redact import MASK, MIN_SECRET_CHARS

MASK_BYTES = MASK.encode("ascii")


class ScrubPattern:
    """A compiled set of values to mask, for bytes and for text.

    `alphabet` is the set of bytes that occur in any value. A value cannot span a byte outside it
    (a newline, for instance), so the stream scrubber never needs to hold back data before one.
    """

    def __init__(self, values: Iterable[str]):
        unique = {value for value in values if value and len(value) >= MIN_SECRET_CHARS}
        # Longest first, so a value that contains another value is masked whole.
        ordered = sorted(unique, key=len, reverse=True)
        encoded = [value.encode("utf-8") for value in ordered]
        self._encoded = tuple(encoded)
        self._ordered = tuple(ordered)
        self.max_length = max((len(value) for value in encoded), default=0)
        # Text shorter than the shortest value cannot contain one, and most header names and values
        # are that short.
        self._min_text_length = min((len(value) for value in ordered), default=0)
        self._bytes = re.compile(b"|".join(map(re.escape, encoded))) if encoded else None
        self._text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.alphabet = bytes(sorted(set(b"".join(encoded))))

    @property
    def empty(self) -> bool:
        return self._bytes is None

    # A substring test per value (a C memory search) is much cheaper than the alternation regex,
    # and almost every body contains no value, so the regex runs only when one is present.

    def contains_value(self, data: bytes) -> bool:
        return any(value in data for value in self._encoded)

    def contains_text(self, text: str) -> bool:
        if self._text is None or len(text) < self._min_text_length:
            return False
        return any(value in text for value in self._ordered)

    def scrub_text(self, text: str) -> str:
        pattern = self._text
        if pattern is None or not self.contains_text(text):
            return text
        return pattern.sub(MASK, text)

    def scrub_bytes(self, data: bytes) -> bytes:
        if self._bytes is None or not self.contains_value(data):
            return data
        return self._bytes.sub(MASK_BYTES, data)

    def stream(self) -> StreamScrubber:
        return StreamScrubber(self)


class StreamScrubber:
    """Scrub a body that arrives in chunks, holding back at most `max_length - 1` bytes."""

    def __init__(self, pattern: ScrubPattern):
        self._pattern = pattern
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Return the scrubbed bytes of `chunk` (and earlier held bytes) that are safe to send now."""
        pattern = self._pattern
        if pattern._bytes is None:
            return chunk
        buffer = self._pending + chunk if self._pending else chunk

        # 1. Bytes from `limit` on could be the start of a value that continues in the next chunk,
        #    unless a byte outside every value's alphabet ends that possibility earlier.
        window = buffer[-(pattern.max_length - 1):] if pattern.max_length > 1 else b""
        limit = len(buffer) - len(window) + len(window.rstrip(pattern.alphabet))

        # 2. Mask every value that starts before `limit`. Such a value lies wholly inside `buffer`,
        #    because a value starting there has all its bytes before the held-back tail ends.
        if not pattern.contains_value(buffer):
            self._pending = buffer[limit:]
            return buffer[:limit]
        parts: list[bytes] = []
        position = 0
        for match in pattern._bytes.finditer(buffer):
            if match.start() >= limit:
                break
            parts.append(buffer[position:match.start()])
            parts.append(MASK_BYTES)
            position = match.end()
        end = max(position, limit)
        parts.append(buffer[position:end])
        self._pending = buffer[end:]
        return b"".join(parts)

    def finish(self) -> bytes:
        """Return the held-back tail, scrubbed, at the end of the body."""
        tail, self._pending = self._pending, b""
        return self._pattern.scrub_bytes(tail)

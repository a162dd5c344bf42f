"""Response body decoding with a cap on decoded bytes, enforced while the body streams.

aiohttp's own decompression is turned off, so the cap and the step size are decided here
and do not depend on the aiohttp version. Deflate reaches ratios near 1000:1, so 1 MiB of
gzip can hold about 1 GiB of zeros. Here zlib output is produced in steps of at most
DECODE_STEP_BYTES, and the caller counts every step against the cap, so a compression bomb
stops within one step of the cap, whatever Content-Length announces.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from keyside.guard.errors import GuardDenied

# The largest piece of decoded output produced at once, and so the overshoot past the cap
# that can sit in memory before the cap is detected.
DECODE_STEP_BYTES = 64 * 1024
# gzip inside deflate inside gzip serves no real purpose; more layers than this are refused.
MAX_CONTENT_ENCODINGS = 2
SUPPORTED_ENCODINGS = ("gzip", "x-gzip", "deflate")
# The Accept-Encoding value sent upstream; it replaces the caller's value.
ACCEPT_ENCODING = "gzip, deflate"


class _ZlibStream:
    """Incremental gzip or deflate decoding with bounded output per step."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._gzip = encoding in ("gzip", "x-gzip")
        self._wbits = 16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS
        self._decoder = zlib.decompressobj(self._wbits)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not self._started and data:
            self._started = True
            if not self._gzip and not _looks_like_zlib(data):
                # RFC 9110 deflate is zlib-wrapped, but some servers send raw deflate.
                self._wbits = -zlib.MAX_WBITS
                self._decoder = zlib.decompressobj(self._wbits)
        yield from self._drain(data)

    def finish(self) -> Iterator[bytes]:
        if not self._started:
            return
        yield from self._drain(b"")
        if not self._decoder.eof:
            raise GuardDenied("response_invalid_encoding",
                              f"Response body ends inside the {self.encoding} stream.")

    def _drain(self, data: bytes) -> Iterator[bytes]:
        pending = data
        while True:
            if self._decoder.eof:
                pending = self._decoder.unused_data + pending
                if not (pending and self._gzip):
                    return
                # A gzip body may hold several members back to back (RFC 1952 section 2.2).
                self._decoder = zlib.decompressobj(self._wbits)
            try:
                output = self._decoder.decompress(pending, DECODE_STEP_BYTES)
            except zlib.error as error:
                raise GuardDenied("response_invalid_encoding",
                                  f"Response body is not valid {self.encoding}: {error}.") from None
            pending = self._decoder.unconsumed_tail
            if output:
                yield output
            # A full step may leave output inside zlib even when all input was consumed.
            if not pending and len(output) < DECODE_STEP_BYTES and not self._decoder.eof:
                return


def _looks_like_zlib(data: bytes) -> bool:
    """Return True when `data` starts with a zlib header (RFC 1950 section 2.2)."""
    if (data[0] & 0x0F) != 8:
        return False
    return len(data) < 2 or (data[0] * 256 + data[1]) % 31 == 0


def parse_content_encoding(header: str | None) -> list[str]:
    """Return the content codings of a Content-Encoding header, or raise GuardDenied."""
    if not header:
        return []
    codings = (coding.strip().lower() for coding in header.split(","))
    encodings = [coding for coding in codings if coding not in ("", "identity")]
    for encoding in encodings:
        if encoding not in SUPPORTED_ENCODINGS:
            raise GuardDenied("response_encoding_unsupported",
                              f"Response uses content encoding {encoding!r}, which keyside cannot decode.",
                              fix=f"Keyside accepts {', '.join(SUPPORTED_ENCODINGS)}.")
    if len(encodings) > MAX_CONTENT_ENCODINGS:
        raise GuardDenied("response_encoding_unsupported",
                          f"Response has {len(encodings)} content encodings; at most {MAX_CONTENT_ENCODINGS} "
                          "are decoded.")
    return encodings


class BodyDecoder:
    """Decodes a body encoded with `encodings` (in the order the server applied them)."""

    def __init__(self, encodings: list[str]):
        # The last coding applied is removed first.
        self._streams = [_ZlibStream(encoding) for encoding in reversed(encodings)]

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, iter([data]))

    def finish(self) -> Iterator[bytes]:
        return self._finish(0)

    def _through(self, index: int, pieces: Iterator[bytes]) -> Iterator[bytes]:
        if index == len(self._streams):
            yield from pieces
            return
        stream = self._streams[index]
        for piece in pieces:
            yield from self._through(index + 1, stream.feed(piece))

    def _finish(self, index: int) -> Iterator[bytes]:
        if index == len(self._streams):
            return
        yield from self._through(index + 1, self._streams[index].finish())
        yield from self._finish(index + 1)

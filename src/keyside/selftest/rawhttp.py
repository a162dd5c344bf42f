"""Exact HTTP/1.1 requests to a loopback port, for requests an HTTP client would refuse to send.

Forged Host headers, bare CR and NUL bytes, raw paths: the self-test writes the bytes itself and
parses the reply, including chunked bodies, which the sidecar uses for streamed responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from keyside.selftest.loopback import is_loopback_address

# A self-test request is small and local; a reply slower than this counts as a failure.
REQUEST_TIMEOUT_S = 15.0
# No reply the self-test expects is near this size.
MAX_REPLY_BYTES = 4 * 1024 * 1024

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


@dataclass(frozen=True)
class RawReply:
    """A parsed reply; status 0 means the server closed the connection without an HTTP reply."""

    status: int
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in order
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key == lowered:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key == lowered]


async def send_raw(port: int, request: bytes, *, host: str = "127.0.0.1",
                   timeout_s: float = REQUEST_TIMEOUT_S) -> RawReply:
    """Send `request` to `host`:`port` (a loopback address) and return the parsed reply.

    The request should carry `Connection: close`; the reply is read until the server closes
    the connection or the body is complete.
    """
    if not is_loopback_address(host):
        raise ValueError(f"the self-test sends requests to loopback addresses only, not {host!r}")
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            await writer.drain()
            received = await _read_reply(reader)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    return parse_reply(received)


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    # Read until the server closes or the body is complete: a request whose Connection header
    # nominates other headers ("close, X-Hop") may leave the connection open.
    received = bytearray()
    while len(received) <= MAX_REPLY_BYTES:
        try:
            chunk = await reader.read(65536)
        except ConnectionError:
            break
        if not chunk:
            break
        received.extend(chunk)
        if _reply_complete(bytes(received)):
            break
    return bytes(received)


def _reply_complete(data: bytes) -> bool:
    reply = parse_reply(data)
    if reply.status == 0:
        return False
    rest = data.partition(b"\r\n\r\n")[2]
    if (reply.header("transfer-encoding") or "").lower() == "chunked":
        return _decode_chunked(rest)[1]
    length = reply.header("content-length")
    if length is not None and length.isdigit():
        return len(rest) >= int(length)
    return reply.status in (204, 304) or 100 <= reply.status < 200


def parse_reply(data: bytes) -> RawReply:
    """Parse the bytes of one HTTP/1.1 reply; a chunked body is decoded."""
    head, separator, rest = data.partition(b"\r\n\r\n")
    match = _STATUS_LINE.match(head)
    if not separator or match is None:
        return RawReply(0, (), b"")
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    reply = RawReply(int(match.group(1)), tuple(headers), b"")
    if (reply.header("transfer-encoding") or "").lower() == "chunked":
        return RawReply(reply.status, reply.headers, _decode_chunked(rest)[0])
    length = reply.header("content-length")
    body = rest[:int(length)] if length is not None and length.isdigit() else rest
    return RawReply(reply.status, reply.headers, body)


def _decode_chunked(data: bytes) -> tuple[bytes, bool]:
    """Return the decoded body and whether the final zero-length chunk was seen."""
    body = bytearray()
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end == -1:
            return bytes(body), False
        size_text = data[position:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(body), False
        if size == 0:
            return bytes(body), True
        start = line_end + 2
        if len(data) < start + size + 2:
            body.extend(data[start:start + size])
            return bytes(body), False
        body.extend(data[start:start + size])
        position = start + size + 2


def build_request(method: str, target: str, port: int, headers: Sequence[tuple[str, str]] = (),
                  body: bytes = b"", connection: str = "close") -> bytes:
    """Return the bytes of a request to the sidecar on `port`, with its Host and a Connection header.

    The text is encoded as UTF-8, so a raw non-ASCII path is sent as its UTF-8 bytes.
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Connection: {connection}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body

"""Exact HTTP/1.1 requests over a socket, for tests that need a path or header no client would send."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

# A loopback test server responds within milliseconds; this only stops a hung test.
TIMEOUT_S = 10.0


@dataclass
class RawResponse:
    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def request(port: int, method: str, target: str | bytes, headers: list[tuple[str, str]] | None = None,
            body: bytes = b"", host: str | None = "default") -> RawResponse:
    """Send one request to 127.0.0.1:`port` exactly as given and return the parsed response.

    `host` "default" sends `Host: 127.0.0.1:<port>`; None sends no Host header; any other value
    is sent as it is.
    """
    lines = [f"{method} ".encode() + (target if isinstance(target, bytes) else target.encode("latin-1"))
             + b" HTTP/1.1"]
    if host == "default":
        host = f"127.0.0.1:{port}"
    if host is not None:
        lines.append(f"Host: {host}".encode("latin-1"))
    for name, value in headers or []:
        lines.append(f"{name}: {value}".encode("latin-1"))
    if body:
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body

    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_response(b"".join(chunks))


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if "chunked" in (headers.get("transfer-encoding") or [""])[0]:
        body = _unchunk(body)
    return RawResponse(status, headers, body)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out

"""The first check on every request: the Host header must name this listener on loopback.

A page on attacker.example can make its own name resolve to 127.0.0.1 (DNS rebinding). The
browser then sends `Host: attacker.example:PORT`, and only this check distinguishes that request
from one addressed to the sidecar. It runs before CORS and the token, so such a request learns
nothing else.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from keyside.sidecar.responses import SidecarHttpError


class HostCheck:
    """The exact Host values this listener accepts: 127.0.0.1, localhost and [::1] with its port."""

    def __init__(self, port: int):
        self.allowed = frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})

    def check(self, request: web.BaseRequest) -> None:
        """Raise SidecarHttpError unless the request has exactly one allowed Host header."""
        values = request.headers.getall(hdrs.HOST, [])
        if not values or not values[0]:
            raise SidecarHttpError(400, "host_missing", "The request has no Host header.",
                                   fix="send HTTP/1.1 requests with Host: 127.0.0.1:PORT")
        if len(values) > 1:
            raise SidecarHttpError(400, "host_invalid", "The request has more than one Host header.")
        # Host names are case-insensitive (RFC 9110, section 4.2.3), so LOCALHOST is the same host.
        if values[0].lower() not in self.allowed:
            raise SidecarHttpError(421, "host_not_allowed",
                                   "The Host header does not name this sidecar's loopback address and port.",
                                   fix="call the sidecar as http://127.0.0.1:PORT")

"""A fake upstream API on 127.0.0.1 that records every request and can act hostile.

Routes:

    /echo/<any>           200, JSON of the request as received: method, path, query, headers, body
    /leak?split=N         200, the credential it received sent back in the X-Echo-Key header and
                          in the body, written in two parts after N bytes
    /redirect?to=URL      302 (or `status`) to URL; keep_query=1 appends the request's raw query,
                          percent-encoded, as the value of a `copied` parameter
    anything else         404

The credential /leak sends back is whatever the request carried: the bearer value of
Authorization, X-Api-Key, or the api_key query parameter. The upstream needs no key of its own.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote

from aiohttp import web

logger = logging.getLogger(__name__)

# Recorded bodies are cut to this size; the self-test sends small bodies only.
MAX_RECORDED_BODY_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the upstream received it."""

    method: str
    path: str  # raw path, without the query
    query: str  # raw query, "" when absent
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def contains(self, text: str) -> bool:
        """Return True when `text` occurs in the path, query, any header name or value, or the body."""
        if not text:
            return False
        if text in self.path or text in self.query or text.encode("utf-8") in self.body:
            return True
        return any(text in key or text in value for key, value in self.headers)


@dataclass
class RecordingUpstream:
    """One fake upstream server; `requests` contains what it received since the last `clear()`."""

    requests: list[RecordedRequest] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _bodies: dict[int, bytes] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def clear(self) -> None:
        self.requests.clear()

    def received(self, text: str) -> bool:
        """Return True when any recorded request contains `text`."""
        return any(request.contains(text) for request in self.requests)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/echo/{tail:.*}", self._echo)
        app.router.add_get("/leak", self._leak)
        app.router.add_get("/redirect", self._redirect)
        app.middlewares.append(self._record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Bound here, not by aiohttp, so the port is known and only 127.0.0.1 listens.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.port = sock.getsockname()[1]
        logger.info("self-test upstream listening port=%d", self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        body = await request.content.read(MAX_RECORDED_BODY_BYTES)
        path, _, query = request.raw_path.partition("?")
        headers = tuple((key.decode("latin-1"), value.decode("latin-1")) for key, value in request.raw_headers)
        self.requests.append(RecordedRequest(request.method, path, query, headers, body))
        # The body stream is consumed now, so handlers find the bytes here, keyed by request.
        self._bodies[id(request)] = body
        try:
            return await handler(request)
        finally:
            self._bodies.pop(id(request), None)

    async def _echo(self, request: web.Request) -> web.Response:
        path, _, query = request.raw_path.partition("?")
        body = {
            "method": request.method,
            "path": path,
            "query": query,
            "headers": [[key.decode("latin-1"), value.decode("latin-1")] for key, value in request.raw_headers],
            "body": self._bodies.get(id(request), b"").decode("utf-8", "replace"),
        }
        return web.json_response(body)

    async def _leak(self, request: web.Request) -> web.StreamResponse:
        credential = _received_credential(request)
        try:
            split = max(0, int(request.query.get("split", "0")))
        except ValueError:
            split = 0
        body = json.dumps({"note": "the upstream sends back what it received", "key": credential,
                           "again": f"key={credential};"}).encode("utf-8")
        response = web.StreamResponse(headers={"Content-Type": "application/json", "X-Echo-Key": credential})
        await response.prepare(request)
        await response.write(body[:split])
        await response.write(body[split:])
        await response.write_eof()
        return response

    async def _redirect(self, request: web.Request) -> web.Response:
        target = request.query.get("to", "/echo/landed")
        try:
            status = int(request.query.get("status", "302"))
        except ValueError:
            status = 302
        if status not in REDIRECT_STATUSES:
            status = 302
        if request.query.get("keep_query") == "1":
            # Hidden inside another parameter, a query-injected key survives the guard's removal
            # of the key's own parameter; only the guard's value check can stop it.
            raw_query = request.raw_path.partition("?")[2]
            target += ("&" if "?" in target else "?") + "copied=" + quote(raw_query, safe="")
        return web.Response(status=status, headers={"Location": target})


def _received_credential(request: web.Request) -> str:
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:]
    if "X-Api-Key" in request.headers:
        return request.headers["X-Api-Key"]
    for name, value in parse_qsl(request.query_string, keep_blank_values=True):
        if name == "api_key":
            return value
    return ""

"""Fake provider APIs on 127.0.0.1 for sidecar, host, `keyside exec` and end-to-end tests.

One `UpstreamServer` imitates the ways real providers take a key and send data back. It records
every request it receives, so a test can assert what reached the upstream (and what did not).

Routes (KEY is the server's `key`; a wrong or missing key gives 401 and never echoes the value):

    GET  /query/<any>?api_key=KEY          key in a query parameter (QUERY_PARAM)
    GET  /api/v1/quote?symbol=S&token=KEY  Finnhub-style quote, key in the `token` parameter
    GET  /header/<any>                     key in the `X-Api-Key` header (HEADER_NAME)
    GET  /bearer/<any>                     key in `Authorization: Bearer KEY`
    GET  /basic/<any>                      HTTP Basic with BASIC_USERNAME (or any user) and KEY
    GET  /botKEY/<method>                  key in the path, Telegram style
    GET  /v1/models                        OpenAI-compatible model list (bearer)
    POST /v1/chat/completions              OpenAI-compatible chat (bearer); "stream": true gives SSE
    POST /v1/messages                      Anthropic-style messages, key in `x-api-key`
    *    /echo/<any>                       JSON of what was received: method, path, query, headers, body
    GET  /sse?events=N&interval_ms=M       a text/event-stream of N events, M ms apart
    GET  /leak?split=N                     the key back in a header and in a body split at byte N
    GET  /leak-sse                         the key inside SSE events, split across writes
    GET  /leak-base64                      the key base64-encoded alone and inside a longer URL-safe
                                           blob, written 3 bytes at a time
    GET  /redirect?to=URL&status=302       a redirect to URL (absolute or a path on this server);
                                           keep_query=1 copies the request query into `copied`
    GET  /stall                            headers and one chunk, then nothing (until the client leaves)
    GET  /stall-headers                    no response at all (until the client leaves)
    GET  /stall-body                       headers announcing 100 bytes, 10 bytes, then nothing
    GET  /status/<code>                    an empty JSON object with that status
    GET  /hostile-headers                  headers that would act on the caller's origin (cookies, HSTS,
                                           CORS, a Basic prompt, Clear-Site-Data)
    GET  /json1k                           a 1 KB JSON document (benchmarks)
    GET  /gzip                             a gzip-compressed JSON document
    GET  /feed/rss, /feed/atom             an RSS 2.0 and an Atom feed
    GET  /feed/html                        an HTML page (not a feed)
    GET  /feed/big?bytes=N                 an RSS document of about N bytes

Use it from async tests with `await server.start()` / `await server.close()`, or from synchronous
tests with `BackgroundUpstreams`, which runs the servers on an event loop in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

DEFAULT_KEY = "sk-test-UPSTREAM-0123456789abcdef"
QUERY_PARAM = "api_key"
FINNHUB_PARAM = "token"
HEADER_NAME = "X-Api-Key"
BASIC_USERNAME = "apiuser"
# The stalling routes wait this long at most, so a server never outlives a forgotten test.
STALL_S = 60.0
# Recorded request bodies are cut to this size, so a benchmark cannot fill memory.
MAX_RECORDED_BODY_BYTES = 1024 * 1024

RSS_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Loopback News</title><link>http://127.0.0.1/</link>
<description>Fake feed</description>
<item><title>First headline</title><link>http://127.0.0.1/1</link><guid>1</guid></item>
<item><title>Second headline</title><link>http://127.0.0.1/2</link><guid>2</guid></item>
</channel></rss>
"""
ATOM_FEED = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Loopback Atom</title><id>urn:keyside:test</id>
<updated>2024-01-01T00:00:00Z</updated>
<entry><title>Atom headline</title><id>urn:keyside:1</id><updated>2024-01-01T00:00:00Z</updated>
<link href="http://127.0.0.1/a1"/></entry>
</feed>
"""


@dataclass
class RecordedRequest:
    """One request as the upstream received it."""

    method: str
    path: str  # the raw path, without the query
    query: str  # the raw query string, "" when absent
    headers: list[tuple[str, str]]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def contains(self, text: str) -> bool:
        """Return True when `text` appears anywhere in the request line, headers or body."""
        if text in self.path or text in self.query or text.encode() in self.body:
            return True
        return any(text in key or text in value for key, value in self.headers)


def _decoded_headers(request: web.BaseRequest) -> list[tuple[str, str]]:
    return [(key.decode("latin-1"), value.decode("latin-1")) for key, value in request.raw_headers]


def _json_1k() -> bytes:
    items = [{"symbol": f"SYM{i:02d}", "price": 100.25 + i, "change": -0.5} for i in range(18)]
    body = json.dumps({"data": items}).encode()
    return body + b" " * (1024 - len(body)) if len(body) < 1024 else body[:1024]


class UpstreamServer:
    """A fake provider API on 127.0.0.1 that accepts one key."""

    def __init__(self, key: str = DEFAULT_KEY, *, record: bool = True, port: int = 0):
        self.key = key
        self.record = record
        self.requests: list[RecordedRequest] = []
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.json_1k = _json_1k()
        # The monotonic send time (ns) of each SSE event written by /sse, keyed by event id.
        self.sse_sent_ns: dict[int, int] = {}

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def clear(self) -> None:
        self.requests.clear()

    def received(self, text: str) -> bool:
        """Return True when any recorded request contains `text`."""
        return any(request.contains(text) for request in self.requests)

    async def start(self) -> UpstreamServer:
        app = web.Application(middlewares=[self._record_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/query/{tail:.*}", self._query)
        app.router.add_get("/api/v1/quote", self._finnhub_quote)
        app.router.add_get("/header/{tail:.*}", self._header)
        app.router.add_get("/bearer/{tail:.*}", self._bearer)
        app.router.add_get("/basic/{tail:.*}", self._basic)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_route("*", "/echo/{tail:.*}", self._echo)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/sse", self._sse)
        app.router.add_get("/leak", self._leak)
        app.router.add_get("/leak-sse", self._leak_sse)
        app.router.add_get("/leak-base64", self._leak_base64)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/stall", self._stall)
        app.router.add_get("/stall-headers", self._stall_headers)
        app.router.add_get("/stall-body", self._stall_body)
        app.router.add_get("/status/{code:\\d+}", self._status)
        app.router.add_get("/hostile-headers", self._hostile_headers)
        app.router.add_get("/json1k", self._json1k)
        app.router.add_get("/gzip", self._gzip)
        app.router.add_get("/feed/rss", self._feed_rss)
        app.router.add_get("/feed/atom", self._feed_atom)
        app.router.add_get("/feed/html", self._feed_html)
        app.router.add_get("/feed/big", self._feed_big)
        app.router.add_get("/{bot:bot[^/]+}/{method}", self._bot)

        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._requested_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- recording and key checks -------------------------------------------------------

    @web.middleware
    async def _record_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.record:
            body = await request.read() if request.can_read_body else b""
            raw_path, _, query = request.raw_path.partition("?")
            self.requests.append(RecordedRequest(
                request.method, raw_path, query, _decoded_headers(request),
                body[:MAX_RECORDED_BODY_BYTES],
            ))
        return await handler(request)

    def _matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.key.encode())

    @staticmethod
    def _unauthorized(where: str) -> web.Response:
        return web.json_response({"error": {"message": f"invalid or missing key in {where}"}}, status=401)

    def _bearer_ok(self, request: web.Request) -> bool:
        value = request.headers.get("Authorization", "")
        return value.startswith("Bearer ") and self._matches(value[len("Bearer "):])

    # ---- key placements ------------------------------------------------------------------

    async def _query(self, request: web.Request) -> web.Response:
        if not self._matches(request.query.get(QUERY_PARAM)):
            return self._unauthorized(f"query parameter {QUERY_PARAM}")
        return web.json_response({"ok": True, "via": "query", "path": request.path,
                                  "params": sorted(k for k in request.query if k != QUERY_PARAM)})

    async def _finnhub_quote(self, request: web.Request) -> web.Response:
        if not self._matches(request.query.get(FINNHUB_PARAM)):
            return self._unauthorized(f"query parameter {FINNHUB_PARAM}")
        symbol = request.query.get("symbol", "")
        return web.json_response({"c": 187.5, "d": 1.25, "dp": 0.67, "h": 188.0, "l": 185.1,
                                  "o": 186.0, "pc": 186.25, "t": 1700000000, "symbol": symbol})

    async def _header(self, request: web.Request) -> web.Response:
        if not self._matches(request.headers.get(HEADER_NAME)):
            return self._unauthorized(f"header {HEADER_NAME}")
        return web.json_response({"ok": True, "via": "header", "path": request.path})

    async def _bearer(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return self._unauthorized("Authorization")
        return web.json_response({"ok": True, "via": "bearer", "path": request.path})

    async def _basic(self, request: web.Request) -> web.Response:
        value = request.headers.get("Authorization", "")
        if value.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(value[6:], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            if (user == BASIC_USERNAME and self._matches(password)) or (self._matches(user) and not password):
                return web.json_response({"ok": True, "via": "basic", "user": user == BASIC_USERNAME})
        return self._unauthorized("Authorization Basic")

    async def _bot(self, request: web.Request) -> web.Response:
        if not self._matches(request.match_info["bot"][len("bot"):]):
            return self._unauthorized("path")
        return web.json_response({"ok": True, "via": "path", "method": request.match_info["method"]})

    # ---- provider imitations -------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return self._unauthorized("Authorization")
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        if not self._bearer_ok(request):
            return self._unauthorized("Authorization")
        try:
            payload = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        words = ["Hello", " from", " the", " loopback", " model."]
        model = payload.get("model", "fake-model")
        if not payload.get("stream"):
            return web.json_response({
                "id": "chatcmpl-1", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(words)}}],
            })
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for word in words:
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.005)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _messages(self, request: web.Request) -> web.Response:
        if not self._matches(request.headers.get("x-api-key")):
            return self._unauthorized("x-api-key")
        return web.json_response({"id": "msg_1", "type": "message", "role": "assistant",
                                  "content": [{"type": "text", "text": "Hello from the loopback model."}]})

    # ---- behaviours for attack and streaming tests --------------------------------------------

    async def _echo(self, request: web.Request) -> web.Response:
        raw_path, _, query = request.raw_path.partition("?")
        body = await request.read() if request.can_read_body else b""
        return web.json_response({
            "method": request.method,
            "path": raw_path,
            "query": query,
            "headers": [list(pair) for pair in _decoded_headers(request)],
            "body": body.decode("utf-8", "replace"),
        })

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        events = int(request.query.get("events", "5"))
        interval_s = int(request.query.get("interval_ms", "10")) / 1000
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for number in range(events):
            if number:
                await asyncio.sleep(interval_s)
            # perf_counter_ns is CLOCK_MONOTONIC on Linux, so another process can compare it.
            sent_ns = time.perf_counter_ns()
            self.sse_sent_ns[number] = sent_ns
            await response.write(f"id: {number}\ndata: {{\"n\": {number}, \"sent_ns\": {sent_ns}}}\n\n".encode())
        await response.write_eof()
        return response

    async def _leak(self, request: web.Request) -> web.StreamResponse:
        body = f'{{"echo": "{self.key}", "again": "prefix-{self.key}-suffix"}}'.encode()
        split = min(int(request.query.get("split", "0")), len(body))
        response = web.StreamResponse(headers={"Content-Type": "application/json", "X-Echo-Key": self.key,
                                               "X-Other": f"v={self.key};"})
        await response.prepare(request)
        parts = [body[:split], body[split:]] if split else [body[i:i + 3] for i in range(0, len(body), 3)]
        for part in parts:
            await response.write(part)
            await asyncio.sleep(0.002)
        await response.write_eof()
        return response

    async def _leak_base64(self, request: web.Request) -> web.StreamResponse:
        key = self.key.encode()
        alone = base64.b64encode(key).decode()
        blob = base64.urlsafe_b64encode(b'{"sub": "' + key + b'"}').decode()
        body = f'{{"alone": "{alone}", "blob": "{blob}"}}'.encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for start in range(0, len(body), 3):
            await response.write(body[start:start + 3])
        await response.write_eof()
        return response

    async def _leak_sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        half = len(self.key) // 2
        await response.write(b"data: first\n\n")
        await response.write(f"data: key={self.key[:half]}".encode())
        await asyncio.sleep(0.01)
        await response.write(f"{self.key[half:]}\n\n".encode())
        await response.write(b"data: last\n\n")
        await response.write_eof()
        return response

    async def _redirect(self, request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        target = request.query.get("to", "/echo/redirected")
        if request.query.get("keep_query") == "1":
            # Imitates an upstream that copies the request's query, key included, into Location.
            raw_query = request.raw_path.partition("?")[2]
            target += ("&" if "?" in target else "?") + "copied=" + quote(raw_query, safe="")
        return web.Response(status=status, headers={"Location": target})

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"partial": ')
        await asyncio.sleep(STALL_S)
        return response

    async def _stall_body(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 100
        await response.prepare(request)
        await response.write(b'{"partial"')
        await asyncio.sleep(STALL_S)
        return response

    async def _stall_headers(self, request: web.Request) -> web.Response:
        await asyncio.sleep(STALL_S)
        return web.json_response({})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({}, status=int(request.match_info["code"]))

    async def _hostile_headers(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, headers={
            "Set-Cookie": "session=upstream; Path=/", "WWW-Authenticate": 'Basic realm="upstream"',
            "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true",
            "Strict-Transport-Security": "max-age=31536000", "Clear-Site-Data": '"*"',
            "X-Upstream-Note": "kept",
        })

    async def _json1k(self, request: web.Request) -> web.Response:
        return web.Response(body=self.json_1k, content_type="application/json")

    async def _gzip(self, request: web.Request) -> web.Response:
        body = gzip.compress(json.dumps({"compressed": True, "text": "abc" * 100}).encode())
        return web.Response(body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})

    async def _feed_rss(self, request: web.Request) -> web.Response:
        return web.Response(text=RSS_FEED, content_type="application/rss+xml", charset="utf-8")

    async def _feed_atom(self, request: web.Request) -> web.Response:
        return web.Response(text=ATOM_FEED, content_type="application/atom+xml", charset="utf-8")

    async def _feed_html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>not a feed</body></html>", content_type="text/html")

    async def _feed_big(self, request: web.Request) -> web.Response:
        size = int(request.query.get("bytes", str(4 * 1024 * 1024)))
        item = "<item><title>" + "x" * 200 + "</title></item>\n"
        body = '<?xml version="1.0"?><rss version="2.0"><channel>\n' + item * (size // len(item) + 1)
        return web.Response(text=body + "</channel></rss>", content_type="application/rss+xml")


async def _cancel_other_tasks() -> None:
    # Handlers of stalling routes may still sleep; cancel them so closing the loop is clean.
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class BackgroundUpstreams:
    """Run UpstreamServers on an event loop in a daemon thread, for synchronous tests.

        with BackgroundUpstreams(UpstreamServer(key="k1")) as (provider,):
            ...  # provider.origin, provider.requests
    """

    def __init__(self, *servers: UpstreamServer):
        self.servers = servers
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstreams", daemon=True)

    def __enter__(self) -> tuple[UpstreamServer, ...]:
        self._thread.start()
        for server in self.servers:
            asyncio.run_coroutine_threadsafe(server.start(), self._loop).result(timeout=10)
        return self.servers

    def __exit__(self, *exc_info: object) -> None:
        for server in self.servers:
            asyncio.run_coroutine_threadsafe(server.close(), self._loop).result(timeout=10)
        asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


@contextmanager
def background_upstream(key: str = DEFAULT_KEY) -> Iterator[UpstreamServer]:
    """Run one UpstreamServer in a background thread for the duration of a `with` block."""
    with BackgroundUpstreams(UpstreamServer(key)) as (server,):
        yield server

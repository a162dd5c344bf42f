"""Fake Finnhub, FRED and Groq APIs on 127.0.0.1 for the end-to-end tests of the monitor app.

Each fake takes its key the way the real provider does under the real paths: Finnhub in the
X-Finnhub-Token header, FRED in the api_key query parameter, Groq as a bearer token. A wrong or
missing key gets the provider's error response. Every request is recorded, so a test can check
what reached the upstream. The Groq fake streams chat completions as server-sent events and can
hold each token until the test releases it, which proves that the page renders a stream as it
arrives without timing anything.

The ports are fixed because tests/e2e/app/keyside.toml names them; they are below Linux's
ephemeral range (32768-60999), so no OS-assigned port of another test can take them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from upstreams import UpstreamServer

FINNHUB_PORT = 18101
FRED_PORT = 18102
GROQ_PORT = 18103
FEED_PORT = 18105

QUOTE = {"c": 187.65, "d": 1.25, "dp": 0.67, "h": 188.2, "l": 185.9, "o": 186.1, "pc": 186.4, "t": 1700000000}
OBSERVATIONS = [
    {"date": "2024-01-01", "value": "3.7"},
    {"date": "2024-02-01", "value": "3.9"},
    {"date": "2024-03-01", "value": "3.8"},
    {"date": "2024-04-01", "value": "."},
    {"date": "2024-05-01", "value": "4.0"},
]
BRIEF_TOKENS = ["- Loopback", " markets", " were", " calm", " today."]
# How often a held stream checks whether the test released its next token.
RELEASE_POLL_S = 0.02


@dataclass
class Seen:
    """One request as a fake provider received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def contains(self, text: str) -> bool:
        blob = " ".join([self.path, self.query, *self.headers.values()]).encode() + self.body
        return text.encode() in blob


@dataclass
class FakeProviders:
    """The three keyed providers and the feed server, with one random key each."""

    finnhub_key: str = field(default_factory=lambda: f"fh-e2e-{secrets.token_hex(12)}")
    fred_key: str = field(default_factory=lambda: f"fred{secrets.token_hex(14)}")
    groq_key: str = field(default_factory=lambda: f"gsk_e2e_{secrets.token_hex(16)}")
    seen: dict[str, list[Seen]] = field(default_factory=lambda: {"finnhub": [], "fred": [], "groq": []})
    # When True, the chat stream sends token N (from 0) only after release_token() was called N times.
    hold_stream: bool = False
    released: int = 0
    _runners: list[web.AppRunner] = field(default_factory=list)
    _feeds: UpstreamServer | None = None

    @property
    def keys(self) -> dict[str, str]:
        return {"FINNHUB_API_KEY": self.finnhub_key, "FRED_API_KEY": self.fred_key, "GROQ_API_KEY": self.groq_key}

    def release_token(self) -> None:
        self.released += 1

    def received_key(self, service: str, key: str) -> bool:
        return any(request.contains(key) for request in self.seen[service])

    async def start(self) -> FakeProviders:
        await self._serve("finnhub", FINNHUB_PORT, [("GET", "/api/v1/quote", self._quote)])
        await self._serve("fred", FRED_PORT, [("GET", "/fred/series/observations", self._observations),
                                              ("GET", "/fred/series", self._series)])
        await self._serve("groq", GROQ_PORT, [("GET", "/openai/v1/models", self._models),
                                              ("POST", "/openai/v1/chat/completions", self._chat)])
        self._feeds = await UpstreamServer(port=FEED_PORT).start()
        return self

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._feeds is not None:
            await self._feeds.close()

    async def _serve(self, name: str, port: int, routes: list[tuple[str, str, Any]]) -> None:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            body = await request.read() if request.can_read_body else b""
            path, _, query = request.raw_path.partition("?")
            self.seen[name].append(Seen(request.method, path, query, dict(request.headers), body))
            return await handler(request)

        app = web.Application(middlewares=[record])
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self._runners.append(runner)

    @staticmethod
    def _same(presented: str | None, key: str) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), key.encode())

    async def _quote(self, request: web.Request) -> web.Response:
        if not self._same(request.headers.get("X-Finnhub-Token"), self.finnhub_key):
            return web.json_response({"error": "Invalid API key"}, status=401)
        return web.json_response(QUOTE)

    def _fred_key_ok(self, request: web.Request) -> bool:
        return self._same(request.query.get("api_key"), self.fred_key)

    @staticmethod
    def _fred_rejected() -> web.Response:
        return web.json_response({"error_code": 400, "error_message": "Bad Request.  The value for variable "
                                  "api_key is not registered.  Read https://fred.stlouisfed.org/docs/api/api_key.html"},
                                 status=400)

    async def _observations(self, request: web.Request) -> web.Response:
        if not self._fred_key_ok(request):
            return self._fred_rejected()
        return web.json_response({"units": "lin", "count": len(OBSERVATIONS), "observations": OBSERVATIONS})

    async def _series(self, request: web.Request) -> web.Response:
        if not self._fred_key_ok(request):
            return self._fred_rejected()
        return web.json_response({"seriess": [{"id": request.query.get("series_id", ""), "title": "Loopback Rate",
                                               "units": "Percent", "frequency": "Monthly"}]})

    def _bearer_ok(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._same(token, self.groq_key)

    async def _models(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return web.json_response({"error": {"message": "Invalid API Key", "type": "invalid_request_error"}},
                                     status=401)
        return web.json_response({"object": "list", "data": [{"id": "llama-3.1-8b-instant", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self._bearer_ok(request):
            return web.json_response({"error": {"message": "Invalid API Key", "type": "invalid_request_error"}},
                                     status=401)
        body = await request.json()
        if not body.get("stream"):
            text = "".join(BRIEF_TOKENS)
            return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for index, token in enumerate(BRIEF_TOKENS):
            while self.hold_stream and self.released < index:
                await asyncio.sleep(RELEASE_POLL_S)
            chunk = {"id": "chatcmpl-e2e", "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {"id": "chatcmpl-e2e", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response


async def _serve_until_interrupted() -> None:
    providers = await FakeProviders().start()
    print("fake providers on 127.0.0.1 ports", FINNHUB_PORT, FRED_PORT, GROQ_PORT, FEED_PORT)
    for name, key in providers.keys.items():
        print(f"  {name} = {key}")
    try:
        await asyncio.Event().wait()
    finally:
        await providers.close()


if __name__ == "__main__":
    # Run from the tests folder so `upstreams` imports: cd tests && python -m e2e.providers
    asyncio.run(_serve_until_interrupted())

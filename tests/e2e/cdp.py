"""A small Chrome DevTools Protocol client for Qt WebEngine pages (desktop end-to-end tests).

Playwright's connect_over_cdp needs browser-context management that Qt WebEngine's DevTools
server does not offer, so desktop tests talk to each page's DevTools WebSocket directly. The
app under test gets QTWEBENGINE_REMOTE_DEBUGGING=127.0.0.1:<port> in its environment from the
test; keyside itself never enables remote debugging.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any

import aiohttp

# DevTools returns a local evaluate within milliseconds; a page stuck longer than this is broken.
COMMAND_TIMEOUT_S = 20.0
# DevTools errors of a page that is between documents; an evaluate is retried on these.
CONTEXT_NOT_READY = ("Cannot find default execution context", "Execution context was destroyed")


class CdpError(RuntimeError):
    """A DevTools command failed or a script threw in the page."""


class CdpPage:
    """One page target: send commands, and collect console messages and network responses."""

    def __init__(self, session: aiohttp.ClientSession, target: dict[str, Any]):
        self._session = session
        self.target = target
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self.console: list[str] = []
        self.responses: list[dict[str, Any]] = []
        self._finished: set[str] = set()

    @property
    def url(self) -> str:
        return self.target.get("url", "")

    async def connect(self) -> CdpPage:
        self._ws = await self._session.ws_connect(self.target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read())
        await self.send("Runtime.enable")
        await self.send("Network.enable")
        await self.send("Log.enable")
        await self.send("Page.enable")
        return self

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            self._on_event(data.get("method", ""), data.get("params", {}))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            parts = [str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])]
            self.console.append(" ".join(parts))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(str(details.get("exception", {}).get("description", details.get("text", ""))))
        elif method == "Log.entryAdded":
            self.console.append(str(params.get("entry", {}).get("text", "")))
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            self.responses.append({"requestId": params.get("requestId"), "url": response.get("url", ""),
                                   "status": response.get("status")})
        elif method == "Network.loadingFinished":
            self._finished.add(params.get("requestId", ""))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._ws is not None
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_str(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        reply = await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
        if "error" in reply:
            raise CdpError(f"{method} failed: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str, *, user_gesture: bool = True) -> Any:
        """Evaluate `expression` in the page (awaiting a promise) and return its JSON value.

        With `user_gesture` the script runs as if from a click or key press, which Chromium
        counts when it classifies a navigation the script starts as a link click. While a page
        is still loading it has no JavaScript context yet; the call is retried until it has one.
        """
        params = {"expression": expression, "awaitPromise": True, "returnByValue": True,
                  "userGesture": user_gesture}
        deadline = asyncio.get_running_loop().time() + COMMAND_TIMEOUT_S
        while True:
            try:
                result = await self.send("Runtime.evaluate", params)
                break
            except CdpError as error:
                loading = any(text in str(error) for text in CONTEXT_NOT_READY)
                if not loading or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(str(details.get("exception", {}).get("description", details.get("text"))))
        return result.get("result", {}).get("value")

    async def insert_text(self, text: str) -> None:
        """Type `text` into the focused element, as a paste from the keyboard would."""
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self) -> bytes:
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(result["data"])

    async def response_bodies(self) -> list[tuple[str, str]]:
        """Return (url, body) for every finished response this page received since connect."""
        bodies = []
        for response in self.responses:
            request_id = response["requestId"]
            if request_id not in self._finished:
                continue
            try:
                result = await self.send("Network.getResponseBody", {"requestId": request_id})
            except CdpError:
                continue  # evicted from DevTools' buffer or a redirect without a body
            body = result.get("body", "")
            if result.get("base64Encoded"):
                body = base64.b64decode(body).decode("utf-8", "replace")
            bodies.append((response["url"], body))
        return bodies


class CdpBrowser:
    """The DevTools HTTP endpoint of one Qt WebEngine process."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        self._pages: dict[str, CdpPage] = {}

    async def close(self) -> None:
        for page in self._pages.values():
            await page.close()
        await self._session.close()

    async def targets(self) -> list[dict[str, Any]]:
        async with self._session.get(f"{self.base}/json/list") as response:
            return [t for t in await response.json(content_type=None) if t.get("type") == "page"]

    async def all_pages(self) -> list[CdpPage]:
        """Return every page target, connected."""
        pages = []
        for target in await self.targets():
            if target["id"] not in self._pages:
                self._pages[target["id"]] = await CdpPage(self._session, target).connect()
            pages.append(self._pages[target["id"]])
        return pages

    async def page(self, url_prefix: str, timeout_s: float = 30.0) -> CdpPage:
        """Return the connected page whose URL starts with `url_prefix`, waiting for it to appear."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                for target in await self.targets():
                    if target.get("url", "").startswith(url_prefix):
                        if target["id"] not in self._pages:
                            self._pages[target["id"]] = await CdpPage(self._session, target).connect()
                        return self._pages[target["id"]]
            except aiohttp.ClientError:
                pass  # the DevTools server is not up yet
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no page with a URL starting with {url_prefix!r} within {timeout_s} s")
            await asyncio.sleep(0.2)

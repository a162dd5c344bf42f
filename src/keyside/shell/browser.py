"""Browser mode: one-time codes, session cookies and the IPC endpoint for pages in a normal browser.

A browser tab has no native bridge, so the host cannot bind a call to a window object. Instead:

1. The shell opens `http://127.0.0.1:<window port>/keyside/start?code=<code>`. The code is random,
   single-use, bound to one window and valid for CODE_TTL_S.
2. The start route exchanges the code for a session cookie (HttpOnly, SameSite=Strict, named for
   the listener's port, because cookies are shared by all ports of 127.0.0.1) and redirects to
   the window's page, so the code leaves the address bar.
3. Every other request to that listener needs the cookie. `POST /keyside/ipc` also needs
   `Origin` equal to the listener's origin and the `X-Keyside-IPC: 1` header. The custom
   header forces a CORS preflight for any other origin, and this server never grants one. The
   Origin check rejects a page of another loopback port, which is the same site and so sends
   the cookie.

The window label comes from the listener that received the call, never from the request body.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from keyside.errors import KeysideError
from keyside.shell.calls import MAX_CALL_BYTES, MAX_CONCURRENT_CALLS, Invoke, run_call
from keyside.shell.pages import ASSET_PREFIX, PUBLIC_ASSET_PATHS, SITE_KEY, WindowSite
from keyside.shell.rejections import RejectionLog

logger = logging.getLogger(__name__)

START_PATH = "/keyside/start"
IPC_PATH = "/keyside/ipc"
IPC_HEADER = "X-Keyside-IPC"
COOKIE_PREFIX = "keyside_session_"
REOPEN_FIX = "Open the window from another keyside window, or stop keyside and run it again for a new link."

# A code opened by the system browser is used within a second. A code printed for the user to
# copy needs time to switch windows and paste.
CODE_TTL_S = 300.0
# 256-bit codes and session ids, URL-safe base64.
CODE_BYTES = 32
SESSION_BYTES = 32
# Codes not yet used. Each `open_window` issues one; more than this waiting at once means a
# page is calling it in a loop, and the oldest are dropped.
MAX_PENDING_CODES = 32
# Sessions per window: one per browser profile or reopened link. Beyond this the oldest is dropped.
MAX_SESSIONS_PER_WINDOW = 8

def _digest(value: str) -> str:
    # Codes and session ids are looked up by their SHA-256, so the lookup's timing reveals
    # nothing about the stored values.
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _PendingCode:
    label: str
    expires_at: float


class BrowserGate:
    """The browser-mode routes and access check for every window listener (thread-safe)."""

    def __init__(self, invoke: Invoke, *, code_ttl_s: float = CODE_TTL_S,
                 clock: Callable[[], float] = time.monotonic):
        self._invoke = invoke
        self._code_ttl_s = code_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._codes: OrderedDict[str, _PendingCode] = OrderedDict()
        self._sessions: dict[str, OrderedDict[str, None]] = {}
        self._executor = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_CALLS, thread_name_prefix="keyside-ipc")
        self._in_flight: dict[str, int] = {}
        self._rejections = RejectionLog(logger, "ipc call rejected")
        self._start_rejections = RejectionLog(logger, "browser start rejected")
        self._page_rejections = RejectionLog(logger, "page request rejected")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- codes and sessions --------------------------------------------------------------

    def issue_code(self, label: str) -> str:
        """Return a new single-use code for window `label`."""
        code = secrets.token_urlsafe(CODE_BYTES)
        now = self._clock()
        with self._lock:
            for key in [k for k, pending in self._codes.items() if pending.expires_at <= now]:
                del self._codes[key]
            while len(self._codes) >= MAX_PENDING_CODES:
                self._codes.popitem(last=False)
            self._codes[_digest(code)] = _PendingCode(label, now + self._code_ttl_s)
        return code

    def start_url(self, site: WindowSite) -> str:
        """Return the URL that opens `site` in a browser, with a fresh code. Never log it."""
        return f"{site.origin}{START_PATH}?code={self.issue_code(site.label)}"

    def redeem_code(self, code: str, label: str) -> str:
        """Exchange a code for a new session id of window `label`; raise KeysideError when invalid.

        Reasons: `code_invalid` (unknown, already used, or for another window) and `code_expired`.
        """
        now = self._clock()
        with self._lock:
            pending = self._codes.pop(_digest(code), None)
            if pending is None or pending.label != label:
                raise KeysideError("This keyside link is invalid or was already used.", reason="code_invalid",
                                   fix=REOPEN_FIX)
            if pending.expires_at <= now:
                raise KeysideError("This keyside link has expired.", reason="code_expired",
                                   fix=REOPEN_FIX)
            session = secrets.token_urlsafe(SESSION_BYTES)
            window_sessions = self._sessions.setdefault(label, OrderedDict())
            while len(window_sessions) >= MAX_SESSIONS_PER_WINDOW:
                window_sessions.popitem(last=False)
            window_sessions[_digest(session)] = None
        return session

    def has_session(self, request: web.Request, site: WindowSite) -> bool:
        value = request.cookies.get(cookie_name(site))
        if not value:
            return False
        with self._lock:
            return _digest(value) in self._sessions.get(site.label, {})

    # -- aiohttp integration -------------------------------------------------------------

    def add_routes(self, app: web.Application, site: WindowSite) -> None:
        app.router.add_get(START_PATH, self._handle_start)
        app.router.add_post(IPC_PATH, self._handle_ipc)

    def check_access(self, request: web.Request, site: WindowSite) -> web.Response | None:
        """Return a 403 response unless the request has this window's session cookie."""
        if request.path == START_PATH or request.path in PUBLIC_ASSET_PATHS or self.has_session(request, site):
            return None
        self._page_rejections.warn("session_required", site.label, f"path={request.path}")
        return web.Response(
            status=403, content_type="text/plain",
            text="keyside: this window needs a session. Open the link that `keyside run --browser` "
                 "printed or opened (reason: session_required).\n")

    async def _handle_start(self, request: web.Request) -> web.Response:
        site = request.app[SITE_KEY]
        code = request.query.get("code", "")
        try:
            session = self.redeem_code(code, site.label)
        except KeysideError as error:
            if self.has_session(request, site):
                # A reopened or reloaded start link in a browser that already has a session.
                return web.Response(status=303, headers={"Location": f"/{site.page}"})
            self._start_rejections.warn(error.reason, site.label)
            return web.Response(status=403, content_type="text/html", charset="utf-8",
                                text=link_error_page(error))
        logger.info("browser session started window=%s", site.label)
        response = web.Response(status=303, headers={"Location": f"/{site.page}"})
        response.set_cookie(cookie_name(site), session, path="/", httponly=True, samesite="Strict")
        return response

    async def _handle_ipc(self, request: web.Request) -> web.Response:
        site = request.app[SITE_KEY]

        # The session cookie was checked by check_access. Then, in order: Origin, the custom
        # header, the body's type and size, and the body's shape.
        if request.headers.get("Origin") != site.origin:
            return self._reject(site, 403, "origin_not_allowed", "IPC calls are accepted from this window's page only.")
        if request.headers.get(IPC_HEADER) != "1":
            return self._reject(site, 403, "ipc_header_missing", f"IPC calls need the {IPC_HEADER}: 1 header.")
        if request.content_type != "application/json":
            return self._reject(site, 415, "invalid_request", "IPC calls must send application/json.")
        body = await _read_limited(request, MAX_CALL_BYTES)
        if body is None:
            return self._reject(site, 413, "request_too_large",
                                f"IPC bodies are limited to {MAX_CALL_BYTES} bytes.")
        try:
            call = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._reject(site, 400, "invalid_request", "The IPC body is not valid JSON.")
        if not isinstance(call, dict) or not isinstance(call.get("command"), str) \
                or not isinstance(call.get("args", {}), dict):
            return self._reject(site, 400, "invalid_request",
                                'The IPC body must be {"command": "<name>", "args": {...}}.')

        with self._lock:
            if self._in_flight.get(site.label, 0) >= MAX_CONCURRENT_CALLS:
                busy = True
            else:
                busy = False
                self._in_flight[site.label] = self._in_flight.get(site.label, 0) + 1
        if busy:
            return self._reject(site, 429, "too_many_calls", "Too many IPC calls at once; wait for earlier ones.")
        try:
            reply = await asyncio.get_running_loop().run_in_executor(
                self._executor, run_call, self._invoke, site.label, f"{site.origin}/",
                call["command"], call.get("args", {}))
        finally:
            with self._lock:
                self._in_flight[site.label] -= 1
        return web.json_response(text=reply.to_json(), status=500 if reply.internal_error else 200)

    def _reject(self, site: WindowSite, status: int, reason: str, message: str) -> web.Response:
        self._rejections.warn(reason, site.label)
        return web.json_response({"ok": False, "error": {"reason": reason, "message": message}}, status=status)


def link_error_page(error: KeysideError) -> str:
    """Return the HTML page for a start link that is invalid, used or expired.

    The page has no inline script or style, because the page server's CSP allows neither. Its
    stylesheet and icon are public assets, loaded without a session.
    """
    if error.reason == "code_expired":
        title = "This keyside link has expired"
        explanation = "Each link that keyside prints or opens works for a few minutes, and this one is too old."
    else:
        title = "This keyside link was already used"
        explanation = ("Each link that keyside prints or opens works once, so that nobody else can open the app "
                "with a copy of it. This one was already used, or it belongs to another window.")
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{html.escape(title)}</title>
  <link rel="stylesheet" href="{ASSET_PREFIX}keyside.css">
  <link rel="icon" href="{ASSET_PREFIX}favicon.svg" type="image/svg+xml">
</head>
<body>
  <main class="keyside-notice">
    <h1>{html.escape(title)}</h1>
    <p>{html.escape(explanation)}</p>
    <p>To continue:</p>
    <ul>
      <li>If the app is already open in another tab of this browser, switch to that tab.</li>
      <li>Otherwise stop keyside with Ctrl-C in its terminal and start <code>keyside run</code> again.
        It opens a new link, or prints one to open.</li>
    </ul>
    <p class="reason">Reason: {html.escape(error.reason)}</p>
  </main>
</body>
</html>
"""


def cookie_name(site: WindowSite) -> str:
    """Return the session cookie's name for a listener; cookies ignore ports, so the port is in it."""
    return f"{COOKIE_PREFIX}{site.port}"


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """Return the request body, or None as soon as it is longer than `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)

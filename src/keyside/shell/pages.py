"""The page server: each window of an app on its own loopback origin, with strict headers.

Every window label gets its own listener on 127.0.0.1 (an OS-assigned port), so each window is
its own origin. The browser's same-origin policy then keeps one window's script from reading or
driving another window's pages, and the listener that receives a request identifies its window.

Each listener serves the app's pages folder and the `/keyside/` assets (bridge.js and the
transport for the current mode). Requests are checked in this order: the Host header must be
exactly the listener's `127.0.0.1:port` (a DNS-rebinding defence), then the method, then the
path. Paths never leave the pages folder, dot-files and unknown file types are not served, and
there is no directory listing. Every response carries the Content-Security-Policy and the other
headers of `security_headers`.

In browser mode a `BrowserGate` (keyside.shell.browser) adds the one-time-code start route, the
session-cookie check on every request and the IPC endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from keyside.errors import KeysideError
from keyside.manifest import Manifest
from keyside.shell.rejections import RejectionLog

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
# The prefix reserved for keyside's own assets and routes; an app's pages cannot shadow it.
ASSET_PREFIX = "/keyside/"
# Pages are small local files, read into memory per request. A larger file is a mistake in the
# app folder (a video, a data dump), so it is rejected instead of streamed.
MAX_PAGE_FILE_BYTES = 16 * 1024 * 1024
# Request bodies: only the browser-mode IPC endpoint takes one, and it sets its own smaller cap.
MAX_REQUEST_BODY_BYTES = 1024 * 1024
# Waiting this long for all listeners to bind covers a loaded machine; binding 127.0.0.1:0 is fast.
START_TIMEOUT_S = 10.0

# The file types a page folder may serve, with their Content-Type. Any other file gets 404, so a
# stray `.py`, `.toml` or `.env` next to the pages is never sent to a renderer.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

# keyside's own files under ASSET_PREFIX. The transport module is chosen per mode in asset_file.
STATIC_ASSETS = ("bridge.js", "favicon.svg", "keyside.css")
# Files a browser may load without a browser-mode session: the icon and the stylesheet of the
# pages keyside itself serves (such as the page for a used link), which hold nothing private.
PUBLIC_ASSET_PATHS = frozenset({f"{ASSET_PREFIX}favicon.svg", f"{ASSET_PREFIX}keyside.css", "/favicon.ico"})
# Browsers request /favicon.ico on their own when a page names no icon. Without such a file in
# the pages folder the request gets 204 instead of a 404 in the console.
DEFAULT_FAVICON_PATH = "/favicon.ico"

# The shell's modes. Desktop windows call the host over the Qt web channel; browser tabs call the
# IPC endpoint. The page server serves the matching transport module as /keyside/transport.js.
MODES = ("desktop", "browser")


def content_security_policy(sidecar_origin: str | None) -> str:
    """Return the CSP for every page: scripts and styles from the page's origin only, and
    connections to that origin and the sidecar only."""
    connect = "'self'" if not sidecar_origin else f"'self' {sidecar_origin}"
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src {connect}",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def security_headers(sidecar_origin: str | None) -> dict[str, str]:
    """Return the headers set on every page-server response."""
    return {
        "Content-Security-Policy": content_security_policy(sidecar_origin),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        # Another origin may not embed these files with <script>, <img> or <link>.
        "Cross-Origin-Resource-Policy": "same-origin",
        # A page opened by a window (or opening one) gets no handle on it across origins.
        "Cross-Origin-Opener-Policy": "same-origin",
        "X-Frame-Options": "DENY",
    }


def origin_of(url: str) -> str | None:
    """Return `scheme://host:port` of an http(s) URL with the port always written, or None.

    Ports are made explicit so that `http://127.0.0.1/` and `http://127.0.0.1:80/` compare
    equal, and nothing else is normalised: the comparison is exact, never by prefix.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def error_response(status: int, reason: str, message: str) -> web.Response:
    """Return a JSON error body in the shape the sidecar uses: {"error": {reason, message}}."""
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


@dataclass(frozen=True)
class WindowSite:
    """One window's listener: its label, the page it opens on, and its loopback origin."""

    label: str
    page: str
    port: int

    @property
    def origin(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}"

    @property
    def host_header(self) -> str:
        return f"{LOOPBACK_HOST}:{self.port}"

    @property
    def page_url(self) -> str:
        return f"{self.origin}/{self.page}"


SITE_KEY = web.AppKey("site", WindowSite)


class Gate(Protocol):
    """Extra routes and an access check for one window site (browser mode)."""

    def add_routes(self, app: web.Application, site: WindowSite) -> None: ...

    def check_access(self, request: web.Request, site: WindowSite) -> web.Response | None: ...


def resolve_page_file(pages_dir: Path, request_path: str) -> Path | None:
    """Return the file under `pages_dir` for a decoded URL path, or None when it must not be served.

    Rejected: NUL or backslash anywhere, `.` and `..` segments, segments starting with a dot,
    empty segments (`//`), targets outside the folder after resolving symlinks, directories and
    file types missing from CONTENT_TYPES.
    """
    if "\x00" in request_path or "\\" in request_path or not request_path.startswith("/"):
        return None
    segments = request_path[1:].split("/")
    if any(segment == "" or segment.startswith(".") for segment in segments):
        return None
    root = pages_dir.resolve()
    try:
        target = root.joinpath(*segments).resolve()
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    if target.suffix.lower() not in CONTENT_TYPES:
        return None
    return target


def asset_file(name: str, mode: str) -> Path | None:
    """Return the file behind `/keyside/<name>` in `mode`, or None for an unknown asset."""
    if name in STATIC_ASSETS:
        file_name = name
    elif name == "transport.js":
        file_name = f"transport-{mode}.js"
    else:
        return None
    path = Path(str(resources.files("keyside") / "ui" / file_name))
    return path if path.is_file() else None


class PageServer:
    """Serves an app's pages, one loopback listener per window label, on a thread of its own.

    `sidecar_origin` is called for every response so the CSP's connect-src follows the sidecar
    when it restarts on another port. `gate` (browser mode) adds session checks and IPC.
    """

    def __init__(self, manifest: Manifest, *, mode: str, sidecar_origin: Callable[[], str | None],
                 gate: Gate | None = None):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        self.manifest = manifest
        self.mode = mode
        self._sidecar_origin = sidecar_origin
        self._gate = gate
        self._sites: dict[str, WindowSite] = {}
        self._runners: list[web.AppRunner] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._rejections = RejectionLog(logger, "page request rejected")

    @property
    def sites(self) -> dict[str, WindowSite]:
        return dict(self._sites)

    def site(self, label: str) -> WindowSite:
        site = self._sites.get(label)
        if site is None:
            raise KeysideError(f"Window {label!r} is not declared in {self.manifest.path}.",
                               reason="unknown_window",
                               fix=f"Use one of: {', '.join(sorted(self._sites)) or '(none)'}.")
        return site

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Bind one listener per window and serve them from a background thread."""
        if self._thread is not None:
            return
        if not self.manifest.windows:
            raise KeysideError(f"{self.manifest.path} declares no windows.", reason="no_windows",
                               fix='Add a [windows.main] table with page = "index.html".')
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._bind_all())
            except BaseException as error:  # noqa: BLE001 - handed to the starting thread
                failure.append(error)
                loop.run_until_complete(self._cleanup())
                loop.close()
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="keyside-pages", daemon=True)
        self._thread.start()
        if not started.wait(timeout_s):
            raise KeysideError(f"The page server did not start within {timeout_s:g} s.",
                               reason="page_server_timeout", fix="Check the log for errors and retry.")
        if failure:
            self._thread = None
            raise KeysideError(f"The page server could not listen on {LOOPBACK_HOST}: {failure[0]}.",
                               reason="page_server_failed",
                               fix="Check that the loopback interface is up.") from failure[0]
        for site in self._sites.values():
            logger.info("page server listening window=%s origin=%s mode=%s", site.label, site.origin, self.mode)

    def stop(self) -> None:
        """Close every listener and end the server thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=START_TIMEOUT_S)
        self._thread = None
        self._loop = None
        logger.info("page server stopped")

    async def _bind_all(self) -> None:
        for label, window in self.manifest.windows.items():
            # The socket is bound first so the site (and with it the origin the gate's routes
            # check) is known before the application and its router are built and frozen.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((LOOPBACK_HOST, 0))
            except OSError:
                sock.close()
                raise
            site = WindowSite(label, window.page, sock.getsockname()[1])
            self._sites[label] = site

            app = web.Application(middlewares=[self._headers_middleware], client_max_size=MAX_REQUEST_BODY_BYTES)
            app[SITE_KEY] = site
            if self._gate is not None:
                self._gate.add_routes(app, site)
            app.router.add_route("*", "/{tail:.*}", self._handle_static)

            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            await web.SockSite(runner, sock).start()

    async def _cleanup(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    @web.middleware
    async def _headers_middleware(self, request: web.Request,
                                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                  ) -> web.StreamResponse:
        site = request.app[SITE_KEY]

        # 1. Host header: exactly this listener's address. A rebound DNS name pointing at
        #    127.0.0.1 arrives with its own name here and gets 421 and nothing else.
        if request.headers.get("Host") != site.host_header:
            self._rejections.warn("host_not_allowed", site.label)
            response: web.StreamResponse = error_response(
                421, "host_not_allowed", f"This server accepts only requests for {site.host_header}.")
        else:
            # 2. The browser-mode session (cookie) check, then the route.
            denied = self._gate.check_access(request, site) if self._gate is not None else None
            response = denied if denied is not None else await self._run_handler(handler, request, site)

        for name, value in security_headers(self._sidecar_origin()).items():
            response.headers[name] = value
        return response

    @staticmethod
    async def _run_handler(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], request: web.Request,
                           site: WindowSite) -> web.StreamResponse:
        # Errors become JSON error responses here, so they carry the security headers too.
        try:
            return await handler(request)
        except web.HTTPException as http_error:
            return error_response(http_error.status, "http_error", http_error.reason)
        except Exception as error:  # noqa: BLE001 - one failed request must not reach aiohttp's bare 500
            logger.error("page request failed window=%s path=%s error=%s", site.label, request.path,
                         type(error).__name__)
            return error_response(500, "internal_error", "The page server failed; see the log.")

    async def _handle_static(self, request: web.Request) -> web.StreamResponse:
        site = request.app[SITE_KEY]
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed here.")
        path = request.path
        if path == "/":
            return web.Response(status=302, headers={"Location": f"/{site.page}"})
        if path.startswith(ASSET_PREFIX):
            target = asset_file(path[len(ASSET_PREFIX):], self.mode)
        else:
            target = resolve_page_file(self.manifest.pages_dir, path)
        if target is None and path == DEFAULT_FAVICON_PATH:
            return web.Response(status=204)
        if target is None:
            return error_response(404, "not_found", "No such page.")

        size = target.stat().st_size
        if size > MAX_PAGE_FILE_BYTES:
            logger.warning("page file not served reason=file_too_large window=%s bytes=%d", site.label, size)
            return error_response(404, "file_too_large", "This file is too large to serve as a page.")
        body = await asyncio.to_thread(target.read_bytes)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPES[target.suffix.lower()]})

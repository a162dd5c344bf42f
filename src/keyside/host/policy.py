"""The per-call window and origin check that decides whether a UI call may run.

pywebview injects its bridge into every page a window loads, including a page on another site
the window was navigated to. The window label alone therefore proves nothing: each call is also
checked against the window's URL read at the time of the call, and only the app's own page
origins pass. Origins are compared exactly as scheme, host and port, never by prefix, so
`http://127.0.0.1:8000.evil.com` is not `http://127.0.0.1:8000`.
"""

from __future__ import annotations

import ipaddress
import threading
from urllib.parse import urlsplit

from keyside.host.ipc import COMMAND_NAME_PATTERN, Command, IpcError
from keyside.manifest import Manifest

DEFAULT_PORTS = {"http": 80, "https": 443}
# Page servers run on this machine only; an origin elsewhere would let a remote site call commands.
LOOPBACK_NAMES = ("localhost",)
# Longer URLs are not page URLs of this app; rejecting them keeps the parse cheap.
MAX_PAGE_URL_CHARS = 8192


def _is_loopback_host(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> str | None:
    """Return the normalized origin `scheme://host:port` of an http(s) URL, or None.

    None means the URL cannot be a page of this app: another scheme, user information, a
    missing host or port that does not parse, whitespace, backslashes or control characters.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_PAGE_URL_CHARS:
        return None
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url) or "\\" in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if "@" in parts.netloc:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}"


def normalize_page_origin(origin: str) -> str:
    """Return a page-server origin in normalized form; raise IpcError `invalid_origin` on a bad one."""
    fix = 'pass the page server\'s origin, such as "http://127.0.0.1:8000"'
    normalized = origin_of(origin)
    if normalized is None:
        raise IpcError(f"Page origin {origin!r} is not an http or https origin.", reason="invalid_origin", fix=fix)
    parts = urlsplit(origin)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise IpcError(f"Page origin {origin!r} has a path, query or fragment.", reason="invalid_origin", fix=fix)
    if not _is_loopback_host(parts.hostname or ""):
        raise IpcError(f"Page origin {origin!r} is not on a loopback address.", reason="invalid_origin",
                       fix="serve the app's pages on 127.0.0.1, [::1] or localhost")
    return normalized


class OriginPolicy:
    """The app's page origins, each bound to one window label or to every window. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._any_window: set[str] = set()
        self._by_window: dict[str, set[str]] = {}

    def add(self, origin: str, window_label: str | None = None) -> str:
        normalized = normalize_page_origin(origin)
        with self._lock:
            if window_label is None:
                self._any_window.add(normalized)
            else:
                self._by_window.setdefault(window_label, set()).add(normalized)
        return normalized

    def all_origins(self) -> list[str]:
        """Return every registered origin, for the sidecar's CORS allow-list."""
        with self._lock:
            origins = set(self._any_window)
            for bound in self._by_window.values():
                origins |= bound
        return sorted(origins)

    def allows(self, window_label: str, origin: str) -> bool:
        with self._lock:
            return origin in self._any_window or origin in self._by_window.get(window_label, set())


def check_call(manifest: Manifest, origins: OriginPolicy, window_label: str, current_url: str,
               command_name: str, command: Command | None) -> str:
    """Return the caller's origin when the call may run; raise IpcError otherwise.

    The steps run in this order, so a page on a foreign origin learns nothing about which
    commands exist. (1) The label is a window of this app. (2) The window's current URL has one
    of the app's page origins for that window. (3) The command exists. (4) The window has the
    command's capability.
    """
    window = manifest.windows.get(window_label) if isinstance(window_label, str) else None
    if window is None:
        raise IpcError(f"Window {str(window_label)[:64]!r} is not a window of this app.",
                       reason="window_not_allowed", fix="declare it under [windows] in keyside.toml")

    origin = origin_of(current_url)
    if origin is None or not origins.allows(window.label, origin):
        raise IpcError(f"Window {window.label!r} is not on this app's page origin; commands are disabled.",
                       reason="origin_not_allowed", fix="navigate the window back to the app's own pages")

    if command is None:
        shown = repr(command_name) if isinstance(command_name, str) and COMMAND_NAME_PATTERN.match(command_name) \
            else "(not a command name)"
        raise IpcError(f"Unknown command {shown}.", reason="unknown_command", fix="check the command name")

    if command.capability is not None and command.capability not in window.capabilities:
        raise IpcError(f"Window {window.label!r} may not call {command.name}: it lacks the "
                       f"{command.capability!r} capability.", reason="window_not_allowed",
                       fix=f'add "{command.capability}" to [windows.{window.label}] capabilities')
    return origin

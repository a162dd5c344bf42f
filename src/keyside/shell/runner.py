"""`keyside run`: start the host, serve the pages and open the app in windows or in a browser.

Order of start: the page server binds one loopback origin per window. The host gets each
origin, bound to its window's label, for the per-call origin check and as a CORS origin of the
sidecar. Then the host starts the sidecar and the windows open. Stop runs in reverse.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from typing import Any, TextIO

from keyside.errors import KeysideError
from keyside.host import APP_COMMANDS, ArgSpec, CallContext, CommandRegistry, Host
from keyside.host.ipc import build_command
from keyside.manifest import LABEL_PATTERN, Manifest
from keyside.shell.browser import BrowserGate
from keyside.shell.display import Finding, desktop_finding, system_browser
from keyside.shell.pages import LOOPBACK_HOST, PageServer, origin_of

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
MODES = ("auto", "desktop", "browser")
MAIN_WINDOW = "main"
# How often browser mode wakes up to notice a stop request.
WAIT_POLL_S = 0.5
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                                 getattr(signal, "SIGHUP", None)) if s is not None)

# (url) -> True when a browser was started for it
UrlOpener = Callable[[str], bool]

# Values of `opened_in`, which `open_window` returns to the calling page: a native window, a
# browser tab, or a one-time link printed on keyside's stdout for the user to open.
OPENED_IN_WINDOW = "window"
OPENED_IN_BROWSER = "browser"
OPENED_IN_TERMINAL = "terminal"


def choose_mode(requested: str, finding: Finding | None = None) -> tuple[str, Finding | None]:
    """Return (mode, why desktop is unavailable) for a requested mode of MODES.

    `auto` opens native windows when a display and the GUI backend are present and browser
    mode otherwise; `desktop` raises KeysideError instead of falling back.
    """
    if requested not in MODES:
        raise ValueError(f"mode {requested!r} is not one of {', '.join(MODES)}")
    if requested == "browser":
        return "browser", None
    finding = finding or desktop_finding()
    if finding.ok:
        return "desktop", None
    if requested == "desktop":
        raise KeysideError(f"Native windows are not available: {finding.detail}.", reason=finding.reason,
                           fix=finding.fix)
    return "browser", finding


def main_window_label(manifest: Manifest) -> str:
    """Return the window that opens at start: `main` when declared, else the first window."""
    if MAIN_WINDOW in manifest.windows:
        return MAIN_WINDOW
    return next(iter(manifest.windows))


def shell_commands(open_window: Callable[[str], str], app_commands: CommandRegistry = APP_COMMANDS
                   ) -> CommandRegistry:
    """Return the app's commands plus `open_window`, which any window may call.

    `open_window(label)` returns one of the OPENED_IN_* values, and the command returns it as
    `opened_in`, so a page can tell the user to open a link that went to the terminal.
    """
    registry = CommandRegistry({name: command for name in app_commands if (command := app_commands.get(name))})

    def handle_open_window(ctx: CallContext, label: str) -> dict[str, str]:
        return {"label": label, "opened_in": open_window(label)}

    if "open_window" in registry:
        logger.info("the app defines its own open_window command; the shell's is not added")
    else:
        registry.add(build_command("open_window", handle_open_window, capability=None,
                                   args={"label": ArgSpec(str, max_length=32)}))
    return registry


def reserve_loopback_port() -> int:
    """Return a loopback port that was free a moment ago, for the sidecar's preferred port.

    Pages allow connections to the sidecar's origin in their CSP, which is fixed when a page
    loads. A restarted sidecar tries the same port first, so open pages keep working. If
    another process took it in between, the sidecar falls back to a new port and the bridge
    reports `sidecar_moved` until the page is reloaded.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        return sock.getsockname()[1]


def default_url_opener(url: str) -> bool:
    """Open `url` with the system browser when there is one; return False to have it printed."""
    if system_browser() is None:
        return False
    try:
        return bool(webbrowser.open(url, new=1))
    except webbrowser.Error:
        return False


class AppShell:
    """One `keyside run` session: host, page server and windows (desktop or browser)."""

    def __init__(self, manifest: Manifest, vault: Any, *, mode: str = "auto", out: TextIO | None = None,
                 url_opener: UrlOpener | None = None, **host_options: Any):
        if not manifest.windows:
            raise KeysideError(f"{manifest.path} declares no windows, so there is nothing to open.",
                               reason="no_windows", fix="Add [windows.main] with a page, or use --headless.")
        self.manifest = manifest
        self.requested_mode = mode
        self.out = out or sys.stdout
        self.url_opener = url_opener or default_url_opener
        self.main_label = main_window_label(manifest)
        self.mode, self.fallback = choose_mode(mode)
        host_options.setdefault("preferred_port", reserve_loopback_port())
        self.host = Host(manifest, vault, commands=shell_commands(self.open_window), **host_options)
        self.gate = BrowserGate(self.host.invoke) if self.mode == "browser" else None
        self.pages = PageServer(manifest, mode=self.mode, sidecar_origin=self._sidecar_origin, gate=self.gate)
        self._desktop: Any = None
        self._stop_requested = threading.Event()

    def _sidecar_origin(self) -> str | None:
        url = self.host.sidecar_url
        return origin_of(url) if url else None

    def run(self) -> int:
        """Run until the main window closes (desktop) or a stop signal arrives (browser)."""
        if self.fallback is not None:
            print(f"keyside: opening {self.manifest.name} in browser mode because {self.fallback.detail} "
                  f"(reason: {self.fallback.reason}).", file=sys.stderr, flush=True)
        previous = self._install_signal_handlers()
        try:
            self.pages.start()
            for label, site in self.pages.sites.items():
                self.host.add_page_origin(site.origin, label)
            self.host.start()
            if self.mode == "desktop":
                self._run_desktop()
            else:
                self._run_browser()
            return EXIT_OK
        finally:
            self.host.stop()
            self.pages.stop()
            if self.gate is not None:
                self.gate.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def open_window(self, label: str) -> str:
        """Open (or show) window `label`: a native window, or a browser tab with a new code.

        Return where it went: OPENED_IN_WINDOW, OPENED_IN_BROWSER, or OPENED_IN_TERMINAL when no
        browser could be started and the link was printed on stdout instead.
        """
        if not LABEL_PATTERN.match(label) or label not in self.manifest.windows:
            raise KeysideError(f"Window {label!r} is not declared by this app.", reason="unknown_window",
                               fix=f"Use one of: {', '.join(sorted(self.manifest.windows))}.")
        if self._desktop is not None:
            self._desktop.open_window(label)
            return OPENED_IN_WINDOW
        return self._open_in_browser(label)

    def stop(self) -> None:
        """Ask run() to return; safe from any thread."""
        self._stop_requested.set()
        if self._desktop is not None:
            self._desktop.close_all()

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, lambda number, frame: self.stop())
        return previous

    def _run_desktop(self) -> None:
        from keyside.shell.desktop import DesktopShell

        self._desktop = DesktopShell(self.manifest, self.pages, self.host.invoke, main_label=self.main_label)
        self._desktop.run()

    def _run_browser(self) -> None:
        self._open_in_browser(self.main_label)
        print("keyside: press Ctrl-C to stop", file=self.out, flush=True)
        while not self._stop_requested.wait(WAIT_POLL_S):
            pass
        logger.info("stop requested app=%s", self.manifest.app_id)

    def _open_in_browser(self, label: str) -> str:
        assert self.gate is not None
        site = self.pages.site(label)
        url = self.gate.start_url(site)
        title = self.manifest.windows[label].title
        # The URL contains a one-time code, so it goes to the browser or to stdout, never to a log.
        if self.url_opener(url):
            logger.info("browser opened window=%s origin=%s", label, site.origin)
            print(f"keyside: opened {title} in the browser", file=self.out, flush=True)
            return OPENED_IN_BROWSER
        print(f"keyside: open this link in a browser for {title} (it works once):\n  {url}",
              file=self.out, flush=True)
        return OPENED_IN_TERMINAL

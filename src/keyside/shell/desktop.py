"""Desktop mode: native windows through pywebview, one per window label of the manifest.

The main window opens at start; other windows open when a page calls `open_window`. Closing
the main window closes the others and ends `run()`. pywebview runs the GUI loop on the main
thread. Calls from pages run on a small thread pool, so a slow command does not freeze a window.

Only pywebview's Qt backend is supported (Linux, and wherever Qt is installed), because the
bridge uses the Qt web channel directly (see keyside.shell.qtbridge for why).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from keyside.errors import KeysideError
from keyside.manifest import Manifest
from keyside.shell.calls import CallReply, Invoke, run_call
from keyside.shell.pages import PageServer

logger = logging.getLogger(__name__)

# Qt WebEngine serves DevTools on this address when the variable is set (tests use it).
REMOTE_DEBUGGING_ENV = "QTWEBENGINE_REMOTE_DEBUGGING"
# Worker threads for page calls across all windows; each window is also capped at
# MAX_CONCURRENT_CALLS in flight by its bridge.
CALL_WORKERS = 8


class DesktopShell:
    """Opens the app's windows with pywebview and connects each to the host."""

    def __init__(self, manifest: Manifest, pages: PageServer, invoke: Invoke, *, main_label: str):
        self.manifest = manifest
        self._pages = pages
        self._invoke = invoke
        self._main_label = main_label
        self._lock = threading.Lock()
        self._windows: dict[str, Any] = {}
        self._executor = ThreadPoolExecutor(max_workers=CALL_WORKERS, thread_name_prefix="keyside-ui-call")
        self._started = threading.Event()

    def run(self) -> None:
        """Open the main window and run the GUI loop until the main window is closed."""
        import webview

        debug_address = os.environ.get(REMOTE_DEBUGGING_ENV)
        if debug_address:
            # Qt WebEngine then serves DevTools, and any local process that connects controls every window.
            logger.warning("remote debugging is on env=%s address=%s", REMOTE_DEBUGGING_ENV, debug_address)
            print(f"keyside: warning: {REMOTE_DEBUGGING_ENV} is set, so any local process that connects to "
                  f"{debug_address} can read and control these windows.", file=sys.stderr, flush=True)
        self._create(self._main_label)
        try:
            # private_mode keeps cookies, storage and cache in memory, so no page data is
            # written under the user's home folder.
            webview.start(self._started.set, gui="qt", private_mode=True)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            logger.info("desktop windows closed")

    def open_window(self, label: str) -> None:
        """Show window `label`, creating it when it is not open; safe from any thread."""
        if label not in self.manifest.windows:
            raise KeysideError(f"Window {label!r} is not declared in {self.manifest.path}.", reason="unknown_window",
                               fix=f"Use one of: {', '.join(sorted(self.manifest.windows))}.")
        with self._lock:
            window = self._windows.get(label)
        if window is None:
            self._create(label)
            return
        window.restore()
        window.show()

    def close_all(self) -> None:
        """Close every window, which ends run(); safe from any thread."""
        with self._lock:
            windows = list(self._windows.values())
        for window in windows:
            window.destroy()

    def _create(self, label: str) -> None:
        import webview

        spec = self.manifest.windows[label]
        site = self._pages.site(label)
        with self._lock:
            if label in self._windows:
                return
            window = webview.create_window(spec.title, site.page_url, width=spec.width, height=spec.height,
                                           text_select=True)
            self._windows[label] = window

        def before_show() -> None:
            # pywebview runs before_show on the GUI thread, before the first page has loaded.
            from keyside.shell import qtbridge

            qtbridge.attach(window.native, label, site.origin, self._submit, self._open_external)

        def closed() -> None:
            with self._lock:
                self._windows.pop(label, None)
            logger.info("window closed window=%s", label)
            if label == self._main_label:
                self.close_all()

        window.events.before_show += before_show
        window.events.closed += closed
        logger.info("window opened window=%s origin=%s", label, site.origin)

    def _submit(self, label: str, current_url: str, command: str, args: dict[str, Any],
                deliver: Callable[[CallReply], None]) -> None:
        def work() -> None:
            deliver(run_call(self._invoke, label, current_url, command, args))

        self._executor.submit(work)

    def _open_external(self, label: str, current_url: str, url: str) -> None:
        def work() -> None:
            reply = run_call(self._invoke, label, current_url, "open_external", {"url": url})
            if not reply.body["ok"]:
                logger.warning("external link not opened reason=%s window=%s", reply.body["error"]["reason"], label)

        self._executor.submit(work)

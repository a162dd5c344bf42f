"""The Qt side of a desktop window: its bridge object on the web channel and its navigation guard.

pywebview's own JavaScript API cannot run under keyside's CSP: it builds its functions with
`new Function` and returns results through `eval`, and `script-src 'self'` forbids both. So
each window gets a `ChannelBridge` registered as "keyside" on the QWebChannel pywebview sets
up, with one slot (`invoke`) and one signal (`reply`). Neither needs eval.

The bridge is created for one window label and reads the window's URL on the GUI thread when
a call arrives, so the host checks the origin of the page the window shows at that moment.
pywebview injects the channel into every page the window loads, so a foreign page could call
the slot too. The host's origin check rejects such a call, and replies go out only while the
window still shows its own origin.

The navigation guard rejects main-frame and frame navigations to any other origin (Qt 6.2+
`navigationRequested`), sends clicked links to the host's open_external command, and turns
requests for new windows (target=_blank, window.open) into open_external calls as well.
Qt reports a script navigation (`location.href = ...`) as a link click, because Chromium gives
both the same transition type, so those go to open_external too. A page can call open_external
itself, so this grants it nothing new; the host's URL checks apply either way.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal, Slot
from qtpy.QtWebEngineCore import QWebEngineNavigationRequest, QWebEnginePage

from keyside.shell.calls import MAX_CALL_BYTES, MAX_CONCURRENT_CALLS, CallReply
from keyside.shell.pages import origin_of
from keyside.shell.rejections import RejectionLog

logger = logging.getLogger(__name__)

# (label, current URL, command, args, deliver) -> None; runs the call off the GUI thread and
# calls deliver(reply) when done.
SubmitCall = Callable[[str, str, str, dict[str, Any], Callable[[CallReply], None]], None]
# (label, current URL of the window, external URL) -> None
OpenExternal = Callable[[str, str, str], None]


class _Relay(QObject):
    """Carries finished replies from worker threads to the GUI thread (queued signal).

    It is not registered on the web channel, so pages cannot see replies before the origin
    check in ChannelBridge._deliver.
    """

    finished = Signal(str)


class ChannelBridge(QObject):
    """The object a window's pages call as `channel.objects.keyside`."""

    reply = Signal(str)

    def __init__(self, label: str, origin: str, current_url: Callable[[], str], submit: SubmitCall):
        super().__init__()
        self._label = label
        self._origin = origin
        self._current_url = current_url
        self._submit = submit
        self._lock = threading.Lock()
        self._in_flight = 0
        self._relay = _Relay()
        self._relay.finished.connect(self._deliver)
        self._rejections = RejectionLog(logger, "ui call rejected")

    @Slot(str)
    def invoke(self, request: str) -> None:
        """Start one call: `request` is JSON {"id": int, "command": str, "args": object}."""
        # The URL is read now, on the GUI thread, so the check applies to the page that is
        # loaded when the call arrives, not to the page the window was created with.
        current_url = self._current_url()
        call_id, command, args, problem = parse_call(request)
        if problem is not None:
            if call_id is not None:
                self._send(call_id, CallReply({"ok": False, "error": problem}))
            self._rejections.warn(problem["reason"], self._label)
            return

        with self._lock:
            busy = self._in_flight >= MAX_CONCURRENT_CALLS
            if not busy:
                self._in_flight += 1
        if busy:
            self._send(call_id, CallReply({"ok": False, "error": {
                "reason": "too_many_calls", "message": "Too many calls at once; wait for earlier ones."}}))
            return

        def deliver(reply: CallReply) -> None:
            with self._lock:
                self._in_flight -= 1
            self._relay.finished.emit(_reply_json(call_id, reply))

        self._submit(self._label, current_url, command, args, deliver)

    def _send(self, call_id: int, reply: CallReply) -> None:
        self._deliver(_reply_json(call_id, reply))

    def _deliver(self, payload: str) -> None:
        # Runs on the GUI thread. A reply (it may hold the sidecar session) goes out only while
        # the window still shows its own origin.
        if origin_of(self._current_url()) != self._origin:
            self._rejections.warn("origin_changed", self._label, "reply=dropped")
            return
        self.reply.emit(payload)


def _reply_json(call_id: int, reply: CallReply) -> str:
    return json.dumps({"id": call_id, **reply.body})


def parse_call(request: Any) -> tuple[int | None, str, dict[str, Any], dict[str, str] | None]:
    """Return (id, command, args, problem) for one bridge request; problem is None when valid."""
    def problem(message: str) -> dict[str, str]:
        return {"reason": "invalid_request", "message": message}

    if not isinstance(request, str) or len(request.encode("utf-8", "surrogatepass")) > MAX_CALL_BYTES:
        return None, "", {}, problem(f"A call must be a JSON string of at most {MAX_CALL_BYTES} bytes.")
    try:
        call = json.loads(request)
    except json.JSONDecodeError:
        return None, "", {}, problem("The call is not valid JSON.")
    if not isinstance(call, dict):
        return None, "", {}, problem("The call must be a JSON object.")
    call_id = call.get("id")
    if not isinstance(call_id, int) or isinstance(call_id, bool) or not 0 < call_id < 2**53:
        return None, "", {}, problem("The call needs a positive integer id.")
    command, args = call.get("command"), call.get("args", {})
    if not isinstance(command, str) or not isinstance(args, dict):
        return call_id, "", {}, problem('The call must be {"id": N, "command": "<name>", "args": {...}}.')
    return call_id, command, args, None


class NavigationGuard:
    """Keeps one window on its origin: other origins are rejected, clicked links go out."""

    def __init__(self, label: str, origin: str, current_url: Callable[[], str], open_external: OpenExternal):
        self._label = label
        self._origin = origin
        self._current_url = current_url
        self._open_external = open_external
        self._rejections = RejectionLog(logger, "navigation blocked")

    def on_navigation_requested(self, request: QWebEngineNavigationRequest) -> None:
        url = request.url().toString()
        if origin_of(url) == self._origin:
            return
        request.reject()
        link = request.navigationType() == QWebEngineNavigationRequest.NavigationType.LinkClickedNavigation
        target = origin_of(url) or url.split(":", 1)[0]
        self._rejections.warn("navigation_not_allowed", self._label,
                              f"main_frame={request.isMainFrame()} link={link} target={target}")
        if link and request.isMainFrame():
            self._open_external(self._label, self._current_url(), url)

    def on_new_window(self, url: str) -> None:
        logger.info("new window request sent to open_external window=%s target=%s",
                    self._label, origin_of(url) or url.split(":", 1)[0])
        self._open_external(self._label, self._current_url(), url)


class NewWindowCatcher(QWebEnginePage):
    """The page Qt loads a new window's URL into; it never loads, it hands the URL on."""

    def __init__(self, profile: Any, on_url: Callable[[str], None]):
        super().__init__(profile)
        self._on_url = on_url

    def acceptNavigationRequest(self, url: Any, navigation_type: Any, is_main_frame: bool) -> bool:  # noqa: N802
        self._on_url(url.toString())
        return False


def attach(browser_view: Any, label: str, origin: str, submit: SubmitCall, open_external: OpenExternal) -> None:
    """Give a pywebview Qt window (`window.native`) its bridge and navigation guard.

    Must run on the GUI thread before the first page finishes loading; pywebview's
    `before_show` event does.
    """
    view = browser_view.webview
    page = view.page()

    def current_url() -> str:
        return view.url().toString()

    # The guard is connected before the bridge exists: a Qt without navigationRequested (before
    # 6.2) raises here, and the window then has no bridge at all rather than one without a guard.
    guard = NavigationGuard(label, origin, current_url, open_external)
    page.navigationRequested.connect(guard.on_navigation_requested)
    # pywebview's createWindow() returns page.nav_handler for target=_blank and window.open.
    page.nav_handler = NewWindowCatcher(page.profile(), guard.on_new_window)

    bridge = ChannelBridge(label, origin, current_url, submit)
    browser_view.channel.registerObject("keyside", bridge)

    # Qt holds no Python reference to these; keep them alive as long as the window.
    browser_view.keyside_parts = (bridge, guard, page.nav_handler)

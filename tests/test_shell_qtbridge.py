"""The desktop bridge object: parsing page calls, binding them to the window, and guarding replies."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from conftest import need
from keyside.shell.calls import MAX_CALL_BYTES, MAX_CONCURRENT_CALLS, CallReply

HAS_QT = importlib.util.find_spec("qtpy") is not None and importlib.util.find_spec("PyQt6") is not None
ORIGIN = "http://127.0.0.1:41000"
# A reply crosses threads through Qt's event queue; this bounds the wait for it.
WAIT_S = 10.0


@pytest.fixture(scope="module")
def qt() -> Any:
    need(HAS_QT, "PyQt6 and qtpy (pip install 'keyside[desktop]')")
    from qtpy.QtCore import QCoreApplication

    from keyside.shell import qtbridge

    app = QCoreApplication.instance() or QCoreApplication([])
    return qtbridge, app


PARSE_CASES = [
    ("valid", '{"id": 1, "command": "list_secrets", "args": {}}', (1, "list_secrets", {}, None)),
    ("args-default", '{"id": 2, "command": "runtime_info"}', (2, "runtime_info", {}, None)),
    ("not-json", "{", (None, "", {}, "invalid_request")),
    ("array", "[1]", (None, "", {}, "invalid_request")),
    ("no-id", '{"command": "x"}', (None, "", {}, "invalid_request")),
    ("id-zero", '{"id": 0, "command": "x"}', (None, "", {}, "invalid_request")),
    ("id-bool", '{"id": true, "command": "x"}', (None, "", {}, "invalid_request")),
    ("id-float", '{"id": 1.5, "command": "x"}', (None, "", {}, "invalid_request")),
    ("id-huge", '{"id": 9007199254740993, "command": "x"}', (None, "", {}, "invalid_request")),
    ("command-number", '{"id": 3, "command": 5}', (3, "", {}, "invalid_request")),
    ("args-list", '{"id": 4, "command": "x", "args": []}', (4, "", {}, "invalid_request")),
]


@pytest.mark.parametrize(("request_text", "expected"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse_call(qt: Any, request_text: str, expected: tuple) -> None:
    qtbridge, _ = qt

    call_id, command, args, problem = qtbridge.parse_call(request_text)

    assert (call_id, command, args) == expected[:3]
    assert (problem["reason"] if problem else None) == expected[3]


def test_parse_call_size_limit(qt: Any) -> None:
    qtbridge, _ = qt
    request_text = json.dumps({"id": 1, "command": "x", "args": {"v": "a" * MAX_CALL_BYTES}})

    call_id, _, _, problem = qtbridge.parse_call(request_text)

    assert call_id is None
    assert problem["reason"] == "invalid_request"


def test_parse_call_not_string(qt: Any) -> None:
    qtbridge, _ = qt

    assert qtbridge.parse_call(None)[3]["reason"] == "invalid_request"


class Window:
    """The URL a bridge reads, changeable by the test like a navigating window."""

    def __init__(self, url: str):
        self.url = url

    def current_url(self) -> str:
        return self.url


def make_bridge(qt: Any, window: Window, submit: Callable[..., None]) -> tuple[Any, list[dict[str, Any]]]:
    qtbridge, _ = qt
    bridge = qtbridge.ChannelBridge("main", ORIGIN, window.current_url, submit)
    replies: list[dict[str, Any]] = []
    bridge.reply.connect(lambda payload: replies.append(json.loads(payload)))
    return bridge, replies


def pump_until(qt: Any, condition: Callable[[], bool]) -> None:
    """Run Qt's event queue until `condition` is true (queued replies are delivered there)."""
    _, app = qt
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        app.processEvents()
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not met within the wait")


def test_call_bound_to_window_and_url(qt: Any) -> None:
    window = Window(f"{ORIGIN}/index.html")
    submitted: list[tuple] = []

    def submit(label: str, url: str, command: str, args: dict, deliver: Callable[[CallReply], None]) -> None:
        submitted.append((label, url, command, args))
        deliver(CallReply({"ok": True, "result": {"n": 1}}))

    bridge, replies = make_bridge(qt, window, submit)
    bridge.invoke(json.dumps({"id": 7, "command": "app_config", "args": {"window": "settings"}}))
    pump_until(qt, lambda: bool(replies))

    assert submitted == [("main", f"{ORIGIN}/index.html", "app_config", {"window": "settings"})]
    assert replies == [{"id": 7, "ok": True, "result": {"n": 1}}]


def test_url_read_at_call_time(qt: Any) -> None:
    window = Window(f"{ORIGIN}/index.html")
    urls: list[str] = []

    def submit(label: str, url: str, command: str, args: dict, deliver: Callable[[CallReply], None]) -> None:
        urls.append(url)
        deliver(CallReply({"ok": False, "error": {"reason": "origin_not_allowed", "message": "no"}}))

    bridge, replies = make_bridge(qt, window, submit)
    window.url = "http://127.0.0.1:41999/elsewhere.html"
    bridge.invoke(json.dumps({"id": 1, "command": "list_secrets"}))
    for _ in range(20):
        qt[1].processEvents()

    assert urls == ["http://127.0.0.1:41999/elsewhere.html"]
    # The window is no longer on its origin, so even the error reply is not sent to the page.
    assert replies == []


def test_reply_dropped_after_navigation(qt: Any) -> None:
    window = Window(f"{ORIGIN}/index.html")
    pending: list[Callable[[CallReply], None]] = []

    def submit(label: str, url: str, command: str, args: dict, deliver: Callable[[CallReply], None]) -> None:
        pending.append(deliver)

    bridge, replies = make_bridge(qt, window, submit)
    bridge.invoke(json.dumps({"id": 1, "command": "local_api"}))
    window.url = "http://evil.example/"
    worker = threading.Thread(target=pending[0], args=(CallReply({"ok": True, "result": {"token": "t0k3n"}}),))
    worker.start()
    worker.join(WAIT_S)
    for _ in range(20):
        qt[1].processEvents()

    assert replies == []


def test_reply_from_worker_thread(qt: Any) -> None:
    window = Window(f"{ORIGIN}/settings.html")

    def submit(label: str, url: str, command: str, args: dict, deliver: Callable[[CallReply], None]) -> None:
        threading.Thread(target=deliver, args=(CallReply({"ok": True, "result": command}),)).start()

    bridge, replies = make_bridge(qt, window, submit)
    for call_id in (1, 2, 3):
        bridge.invoke(json.dumps({"id": call_id, "command": f"c{call_id}"}))
    pump_until(qt, lambda: len(replies) == 3)

    assert sorted(reply["id"] for reply in replies) == [1, 2, 3]
    assert {reply["id"]: reply["result"] for reply in replies} == {1: "c1", 2: "c2", 3: "c3"}


def test_invalid_call_answered_without_host(qt: Any) -> None:
    window = Window(f"{ORIGIN}/index.html")
    submitted: list[Any] = []

    bridge, replies = make_bridge(qt, window, lambda *call: submitted.append(call))
    bridge.invoke('{"id": 5, "command": 1}')
    bridge.invoke("not json")

    assert submitted == []
    assert replies == [{"id": 5, "ok": False, "error": {
        "reason": "invalid_request", "message": 'The call must be {"id": N, "command": "<name>", "args": {...}}.'}}]


def test_concurrent_calls_capped(qt: Any) -> None:
    window = Window(f"{ORIGIN}/index.html")
    pending: list[Callable[[CallReply], None]] = []

    bridge, replies = make_bridge(qt, window, lambda *call: pending.append(call[-1]))
    for call_id in range(1, MAX_CONCURRENT_CALLS + 2):
        bridge.invoke(json.dumps({"id": call_id, "command": "runtime_info"}))

    assert len(pending) == MAX_CONCURRENT_CALLS
    assert replies == [{"id": MAX_CONCURRENT_CALLS + 1, "ok": False, "error": {
        "reason": "too_many_calls", "message": "Too many calls at once; wait for earlier ones."}}]

    pending[0](CallReply({"ok": True, "result": None}))
    pump_until(qt, lambda: len(replies) == 2)
    bridge.invoke(json.dumps({"id": 99, "command": "runtime_info"}))

    assert len(pending) == MAX_CONCURRENT_CALLS + 1


def test_only_invoke_and_reply_exposed(qt: Any) -> None:
    qtbridge, _ = qt
    bridge = qtbridge.ChannelBridge("main", ORIGIN, lambda: ORIGIN, lambda *call: None)
    meta = bridge.metaObject()
    own = [meta.method(index) for index in range(meta.methodOffset(), meta.methodCount())]

    assert sorted(bytes(method.name()).decode() for method in own) == ["invoke", "reply"]

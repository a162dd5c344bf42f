"""Browser mode: one-time codes, session cookies and the checks of the IPC endpoint."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from e2e import rawhttp
from keyside.errors import KeysideError
from keyside.manifest import load_manifest
from keyside.shell.browser import MAX_PENDING_CODES, MAX_SESSIONS_PER_WINDOW, BrowserGate, cookie_name
from keyside.shell.calls import MAX_CONCURRENT_CALLS
from keyside.shell.pages import PageServer, WindowSite
from test_shell_pages import make_app

CASES = json.loads((Path(__file__).parent / "data" / "shell_ipc_requests.json").read_text())
# A test waits this long for calls to reach the host; a loopback call takes milliseconds.
WAIT_S = 10.0


@dataclass
class Recorder:
    """The host side of the gate in these tests: records each call and returns or raises."""

    calls: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    result: Any = None
    error: BaseException | None = None

    def __call__(self, label: str, current_url: str, command: str, args: dict[str, Any]) -> Any:
        self.calls.append((label, current_url, command, args))
        if self.error is not None:
            raise self.error
        return self.result if self.result is not None else {"echo": command}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Browser:
    pages: PageServer
    gate: BrowserGate
    recorder: Recorder
    clock: Clock

    def site(self, label: str = "main") -> WindowSite:
        return self.pages.site(label)

    def code(self, label: str = "main") -> str:
        url = self.gate.start_url(self.site(label))
        return parse_qs(urlsplit(url).query)["code"][0]

    def start(self, code: str, label: str = "main", cookie: str | None = None) -> rawhttp.RawResponse:
        headers = [("Cookie", cookie)] if cookie else []
        return rawhttp.request(self.site(label).port, "GET", f"/keyside/start?code={code}", headers)

    def session(self, label: str = "main") -> str:
        """Return a `Cookie` header value with a fresh session for window `label`."""
        response = self.start(self.code(label), label)
        assert response.status == 303
        return response.header("Set-Cookie").split(";", 1)[0]

    def ipc(self, body: bytes, *, label: str = "main", cookie: str | None, origin: str | None = "self",
            header: str | None = "1", content_type: str = "application/json") -> rawhttp.RawResponse:
        site = self.site(label)
        headers = [("Content-Type", content_type)]
        if cookie:
            headers.append(("Cookie", cookie))
        if origin is not None:
            headers.append(("Origin", site.origin if origin == "self" else origin))
        if header is not None:
            headers.append(("X-Keyside-IPC", header))
        return rawhttp.request(site.port, "POST", "/keyside/ipc", headers, body)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    manifest = load_manifest(make_app(tmp_path))
    recorder, clock = Recorder(), Clock()
    gate = BrowserGate(recorder, clock=clock)
    pages = PageServer(manifest, mode="browser", sidecar_origin=lambda: None, gate=gate)
    pages.start()
    try:
        yield Browser(pages, gate, recorder, clock)
    finally:
        pages.stop()
        gate.close()


def call_body(command: str = "list_secrets", args: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"command": command, "args": args or {}}).encode()


def test_start_sets_session_cookie(browser: Browser) -> None:
    response = browser.start(browser.code())
    cookie = response.header("Set-Cookie")
    attributes = [part.strip().lower() for part in cookie.split(";")]

    assert response.status == 303
    assert response.header("Location") == "/index.html"
    assert cookie.startswith(f"{cookie_name(browser.site())}=")
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/" in attributes
    assert not any(part.startswith(("max-age", "expires")) for part in attributes)


def test_code_works_once(browser: Browser) -> None:
    code = browser.code()

    first = browser.start(code)
    second = browser.start(code)

    assert first.status == 303
    assert second.status == 403
    assert b"code_invalid" in second.body
    assert second.header("Set-Cookie") is None


def test_used_link_page_is_styled_html(browser: Browser) -> None:
    code = browser.code()
    browser.start(code)

    response = browser.start(code)
    body = response.body.decode()

    assert response.status == 403
    assert response.header("Content-Type") == "text/html; charset=utf-8"
    assert "<h1>This keyside link was already used</h1>" in body
    assert '<link rel="stylesheet" href="/keyside/keyside.css">' in body
    assert "<code>keyside run</code>" in body
    assert "another tab" in body
    assert "<script" not in body
    assert "style=" not in body
    assert "<style" not in body
    assert code not in body
    assert "script-src 'self'" in response.header("Content-Security-Policy")


def test_expired_link_page_says_expired(browser: Browser) -> None:
    code = browser.code()
    browser.clock.now += 301

    body = browser.start(code).body.decode()

    assert "<h1>This keyside link has expired</h1>" in body
    assert "Reason: code_expired" in body


@pytest.mark.parametrize(("path", "content_type"), [
    ("/keyside/keyside.css", "text/css; charset=utf-8"),
    ("/keyside/favicon.svg", "image/svg+xml"),
])
def test_public_assets_need_no_session(browser: Browser, path: str, content_type: str) -> None:
    response = rawhttp.request(browser.site().port, "GET", path, [])

    assert response.status == 200
    assert response.header("Content-Type") == content_type
    assert response.header("Set-Cookie") is None


def test_favicon_ico_needs_no_session(browser: Browser) -> None:
    response = rawhttp.request(browser.site().port, "GET", "/favicon.ico", [])

    assert response.status == 204
    assert response.body == b""


def test_bridge_still_needs_session(browser: Browser) -> None:
    response = rawhttp.request(browser.site().port, "GET", "/keyside/bridge.js", [])

    assert response.status == 403


def test_code_expires(browser: Browser) -> None:
    code = browser.code()
    browser.clock.now += 301

    response = browser.start(code)

    assert response.status == 403
    assert b"code_expired" in response.body


def test_code_for_other_window_rejected(browser: Browser) -> None:
    settings_code = browser.code("settings")

    on_main = browser.start(settings_code, "main")
    on_settings = browser.start(settings_code, "settings")

    assert on_main.status == 403
    # The failed attempt on the wrong window used the code up.
    assert on_settings.status == 403


INVENTED_CODES = {"empty": "", "short": "x", "guess": "A" * 43, "nul": "%00", "path": "../../etc"}


@pytest.mark.parametrize("code", INVENTED_CODES.values(), ids=INVENTED_CODES.keys())
def test_invented_codes_rejected(browser: Browser, code: str) -> None:
    browser.code()

    response = browser.start(code)

    assert response.status == 403
    assert response.header("Set-Cookie") is None


def test_used_link_with_session_redirects(browser: Browser) -> None:
    cookie = browser.session()

    response = browser.start("already-used", cookie=cookie)

    assert response.status == 303
    assert response.header("Location") == "/index.html"


def test_pages_need_session(browser: Browser) -> None:
    port = browser.site().port
    cookie = browser.session()

    without = rawhttp.request(port, "GET", "/index.html")
    with_cookie = rawhttp.request(port, "GET", "/index.html", [("Cookie", cookie)])
    asset_without = rawhttp.request(port, "GET", "/keyside/bridge.js")

    assert without.status == 403
    assert b"session_required" in without.body
    assert with_cookie.status == 200
    assert asset_without.status == 403


def test_session_bound_to_window(browser: Browser) -> None:
    main_cookie = browser.session("main")
    value = main_cookie.split("=", 1)[1]
    forged = f"{cookie_name(browser.site('settings'))}={value}"

    response = rawhttp.request(browser.site("settings").port, "GET", "/settings.html", [("Cookie", forged)])

    assert response.status == 403


def cookie_for(browser: Browser, kind: str) -> str | None:
    if kind == "own":
        return browser.session("main")
    if kind == "other-window":
        value = browser.session("settings").split("=", 1)[1]
        return f"{cookie_name(browser.site('main'))}={value}"
    return None


def origin_for(browser: Browser, kind: str | None) -> str | None:
    if kind == "other-window":
        return browser.site("settings").origin
    if kind is None or kind == "self":
        return kind
    return kind.format(port=browser.site().port)


@pytest.mark.parametrize("case", CASES["rejected"], ids=[c["id"] for c in CASES["rejected"]])
def test_ipc_rejections(browser: Browser, case: dict) -> None:
    if "body_hex" in case:
        body = bytes.fromhex(case["body_hex"])
    elif "body_size" in case:
        body = call_body(args={"value": "x" * case["body_size"]})
    else:
        body = case["body"].encode()

    response = browser.ipc(body, cookie=cookie_for(browser, case["cookie"]),
                           origin=origin_for(browser, case["origin"]), header=case["header"],
                           content_type=case["content_type"])

    assert response.status == case["status"]
    if case["reason"] is not None:
        assert json.loads(response.body)["error"]["reason"] == case["reason"]
    assert browser.recorder.calls == []


def test_ipc_preflight_gets_no_grant(browser: Browser) -> None:
    site = browser.site()
    headers = [("Origin", "http://evil.example"), ("Access-Control-Request-Method", "POST"),
               ("Access-Control-Request-Headers", "content-type,x-keyside-ipc")]

    response = rawhttp.request(site.port, "OPTIONS", "/keyside/ipc", headers)

    assert response.status in (403, 405)
    assert response.header("Access-Control-Allow-Origin") is None
    assert response.header("Access-Control-Allow-Headers") is None
    assert browser.recorder.calls == []


def test_ipc_call_reaches_host(browser: Browser) -> None:
    cookie = browser.session()

    response = browser.ipc(call_body("app_config", {"a": 1}), cookie=cookie)

    assert response.status == 200
    assert json.loads(response.body) == {"ok": True, "result": {"echo": "app_config"}}
    assert browser.recorder.calls == [("main", f"{browser.site().origin}/", "app_config", {"a": 1})]


def test_ipc_window_from_listener(browser: Browser) -> None:
    cookie = browser.session("settings")
    body = json.dumps({"command": "list_secrets", "args": {}, "window": "main", "label": "main"}).encode()

    response = browser.ipc(body, label="settings", cookie=cookie)

    assert response.status == 200
    assert browser.recorder.calls[0][0] == "settings"
    assert browser.recorder.calls[0][1] == f"{browser.site('settings').origin}/"


def test_ipc_missing_args_default(browser: Browser) -> None:
    cookie = browser.session()

    response = browser.ipc(b'{"command": "runtime_info"}', cookie=cookie)

    assert response.status == 200
    assert browser.recorder.calls == [("main", f"{browser.site().origin}/", "runtime_info", {})]


def test_ipc_command_error_reply(browser: Browser) -> None:
    cookie = browser.session()
    browser.recorder.error = KeysideError("Window main may not call set_secret.", reason="window_not_allowed",
                                          fix="call it from the settings window")

    response = browser.ipc(call_body("set_secret"), cookie=cookie)

    assert response.status == 200
    assert json.loads(response.body) == {"ok": False, "error": {
        "reason": "window_not_allowed", "message": "Window main may not call set_secret.",
        "fix": "call it from the settings window"}}


def test_ipc_unexpected_error_hidden(browser: Browser, caplog: pytest.LogCaptureFixture) -> None:
    cookie = browser.session()
    browser.recorder.error = RuntimeError("detail-that-could-quote-sk-live-123456")

    with caplog.at_level(logging.DEBUG):
        response = browser.ipc(call_body(), cookie=cookie)

    reply = json.loads(response.body)
    assert response.status == 500
    assert reply["error"]["reason"] == "internal_error"
    assert "sk-live" not in response.body.decode()
    assert "sk-live" not in caplog.text
    assert "RuntimeError" in caplog.text


def test_ipc_result_not_json(browser: Browser) -> None:
    cookie = browser.session()
    browser.recorder.result = {"bad": object()}

    response = browser.ipc(call_body(), cookie=cookie)

    assert response.status == 500
    assert json.loads(response.body)["error"]["reason"] == "internal_error"


def test_ipc_concurrency_capped(browser: Browser) -> None:
    cookie = browser.session()
    entered = threading.Semaphore(0)
    release = threading.Event()

    def blocking(label: str, current_url: str, command: str, args: dict[str, Any]) -> Any:
        entered.release()
        release.wait(WAIT_S)
        return {"done": True}

    browser.gate._invoke = blocking
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(browser.ipc(call_body(), cookie=cookie).status))
               for _ in range(MAX_CONCURRENT_CALLS)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(MAX_CONCURRENT_CALLS):
            assert entered.acquire(timeout=WAIT_S)
        extra = browser.ipc(call_body(), cookie=cookie)
    finally:
        release.set()
        for thread in threads:
            thread.join(WAIT_S)

    assert extra.status == 429
    assert json.loads(extra.body)["error"]["reason"] == "too_many_calls"
    assert statuses == [200] * MAX_CONCURRENT_CALLS


def test_pending_codes_capped(browser: Browser) -> None:
    first = browser.code()
    for _ in range(MAX_PENDING_CODES):
        browser.code()

    assert browser.start(first).status == 403


def test_sessions_per_window_capped(browser: Browser) -> None:
    first = browser.session()
    for _ in range(MAX_SESSIONS_PER_WINDOW):
        browser.session()

    response = rawhttp.request(browser.site().port, "GET", "/index.html", [("Cookie", first)])

    assert response.status == 403


def test_codes_and_sessions_never_logged(browser: Browser, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        code = browser.code()
        response = browser.start(code)
        cookie = response.header("Set-Cookie").split(";", 1)[0]
        browser.ipc(call_body(), cookie=cookie)
        browser.start(code)
        browser.ipc(call_body(), cookie=cookie, origin="http://evil.example")

    session = cookie.split("=", 1)[1]
    assert code not in caplog.text
    assert session not in caplog.text
    assert "browser session started window=main" in caplog.text

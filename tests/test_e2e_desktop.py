"""End to end in desktop mode: `keyside run` opening pywebview windows (Qt backend) under Xvfb.

The test starts its own Xvfb and runs the app with QTWEBENGINE_REMOTE_DEBUGGING on a loopback
port. It then drives the real windows through DevTools (tests/e2e/cdp.py) with the same user
flow and proofs as the browser-mode test. A second test checks the desktop-only guard that keeps
a window on its own origin. Screenshots of both windows go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conftest import need
from e2e.cdp import CdpBrowser, CdpPage
from e2e.fixtures import foreign_site, running_providers
from e2e.flow import (
    CdpUiPage,
    check_empty_dashboard,
    check_window_capabilities,
    run_keys_flow,
    texts_containing,
    wait_for_panel,
)
from e2e.providers import FakeProviders
from e2e.session import KeysideRun

pytestmark = [pytest.mark.desktop, pytest.mark.netns]

# Qt splits this variable at spaces unless an argument is quoted, as the resolver rules must be.
QT_FLAGS = ('--no-sandbox --disable-gpu --disable-background-networking '
            '"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"')
# Xvfb writes its display number within a second; this bounds a broken X server.
XVFB_START_S = 20.0


@pytest.fixture
def xvfb() -> Iterator[str]:
    """Start a private Xvfb on a free display number and yield its DISPLAY value."""
    need(shutil.which("Xvfb") is not None, "Xvfb (apt-get install xvfb)")
    need(importlib.util.find_spec("webview") is not None and importlib.util.find_spec("PyQt6") is not None,
         "pywebview with the Qt backend (pip install 'keyside[desktop]')")
    read_end, write_end = os.pipe()
    process = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1400x1000x24",
                                "-nolisten", "tcp"], pass_fds=(write_end,),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as reader:
            display = reader.readline().strip()
        need(display.isdigit(), "Xvfb started but reported no display number")
        yield f":{display}"
    finally:
        process.terminate()
        try:
            process.wait(XVFB_START_S)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
async def providers() -> AsyncIterator[FakeProviders]:
    async with running_providers() as fakes:
        yield fakes


@pytest.fixture
async def foreign() -> AsyncIterator[str]:
    async with foreign_site() as origin:
        yield origin


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def desktop_app(tmp_path: Path, display: str) -> AsyncIterator[tuple[KeysideRun, CdpBrowser]]:
    """Run `keyside run` on `display` with DevTools on a loopback port; yield it and a DevTools client."""
    debug_port = free_port()
    run = KeysideRun(tmp_path, env={
        "DISPLAY": display,
        "QT_QPA_PLATFORM": "xcb",
        "QTWEBENGINE_CHROMIUM_FLAGS": QT_FLAGS,
        "QTWEBENGINE_REMOTE_DEBUGGING": f"127.0.0.1:{debug_port}",
    })
    await run.start()
    devtools = CdpBrowser(debug_port)
    try:
        await run.wait_for_output(r"window opened window=main origin=\S+")
        yield run, devtools
    finally:
        await devtools.close()
        run.status = await run.stop()


async def window_page(run: KeysideRun, devtools: CdpBrowser, label: str) -> CdpPage:
    line = await run.wait_for_output(rf"window opened window={label} origin=\S+")
    origin = line.rsplit("=", 1)[1]
    return await devtools.page(origin + "/")


async def test_desktop_flow_keys_stay_out(tmp_path: Path, xvfb: str, providers: FakeProviders) -> None:
    async with desktop_app(tmp_path, xvfb) as (run, devtools):
        assert "browser mode" not in run.stderr
        assert "QTWEBENGINE_REMOTE_DEBUGGING is set" in run.stderr
        main_cdp = await window_page(run, devtools, "main")
        main = CdpUiPage(main_cdp)
        await check_empty_dashboard(main)

        # The dashboard's Settings button opens the second native window.
        await main.click("[data-role=open-settings]")
        settings_cdp = await window_page(run, devtools, "settings")
        settings = CdpUiPage(settings_cdp)

        secrets_only, token = await run_keys_flow(main, settings, providers, "desktop")
        needles = [*secrets_only, token]

        cookies = (await main_cdp.send("Network.getAllCookies"))["cookies"]
        assert [c["name"] for c in cookies if any(n in c["value"] for n in needles)] == []

        responses = {}
        for label, page in (("main", main_cdp), ("settings", settings_cdp)):
            for number, (url, body) in enumerate(await page.response_bodies()):
                responses[f"{label} {number} {url}"] = body
        assert len(responses) > 10
        assert texts_containing(responses, needles) == []

        console = main_cdp.console + settings_cdp.console
        assert [m for m in console if any(n in m for n in needles)] == []

    logs = run.log_texts()
    assert any(path.endswith("audit.log") for path in logs)
    assert texts_containing(logs, needles) == []
    assert texts_containing({"stdout": run.stdout, "stderr": run.stderr}, needles) == []
    assert run.status == 0


async def test_desktop_window_stays_on_origin(tmp_path: Path, xvfb: str, providers: FakeProviders,
                                              foreign: str) -> None:
    target = f"{foreign}/attack.html"
    async with desktop_app(tmp_path, xvfb) as (run, devtools):
        main_cdp = await window_page(run, devtools, "main")
        main = CdpUiPage(main_cdp)
        await wait_for_panel(main, "panel-quotes", "missing")
        origin = main_cdp.url.split("/index.html")[0]
        await main_cdp.evaluate("window.keysideTestMarker = 'still here'")

        # A script navigation is rejected. Qt reports it as a link click (both are Chromium
        # "link" transitions), so it is handed to the system browser through open_external.
        await main_cdp.evaluate(f"location.href = {target + '?script'!r}", user_gesture=False)
        assert await run.next_url() == target + "?script"

        # A clicked link is rejected the same way.
        await main_cdp.evaluate(f"""(() => {{ const a = document.createElement("a"); a.href = {target + '?link'!r};
            document.body.append(a); a.click(); a.remove(); }})()""")
        assert await run.next_url() == target + "?link"

        # A new window (window.open, target=_blank) also goes to the system browser.
        await main_cdp.evaluate(f"void window.open({target + '?new'!r}, '_blank')")
        assert await run.next_url() == target + "?new"

        assert await main_cdp.evaluate("window.keysideTestMarker") == "still here"
        assert await main_cdp.evaluate("location.origin") == origin
        # Qt made a page for window.open, but it never loaded anything: the request was handed on.
        pages = await devtools.all_pages()
        loaded = [await page.evaluate("location.href + ' ' + typeof window.attack") for page in pages]
        assert not any(text.startswith(foreign) or text.endswith("function") for text in loaded), loaded
        # The page still works after the attempts.
        await asyncio.wait_for(check_window_capabilities(main), 30)

    assert run.status == 0
    # The rejections are logged, but no query of the rejected URLs reaches stdout, stderr or a log file.
    assert f"navigation blocked reason=navigation_not_allowed window=main main_frame=True link=True " \
           f"target={foreign}" in run.stderr
    outputs = {"stdout": run.stdout, "stderr": run.stderr, **run.log_texts()}
    assert texts_containing(outputs, ["?script", "?link", "?new"]) == []

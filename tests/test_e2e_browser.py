"""End to end in browser mode: `keyside run --browser` driven through headless Chromium.

The app is tests/e2e/app (the monitor's pages, services pointed at tests/e2e/providers.py).
A user starts with an empty vault, opens settings from the dashboard, pastes each key,
validates and saves it, and the dashboard fills with the fakes' data while the AI brief
streams. Then the tests look for the keys (and the sidecar token) everywhere a page or a log
could keep them, and check that a page on a foreign origin cannot call any command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from conftest import need
from e2e.fixtures import foreign_site, running_providers
from e2e.flow import (
    ARTIFACTS,
    PlaywrightUiPage,
    check_empty_dashboard,
    run_keys_flow,
    texts_containing,
    wait_for_panel,
)
from e2e.providers import FakeProviders
from e2e.session import KeysideRun

pytestmark = [pytest.mark.browser, pytest.mark.netns]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
ATTACKER_KEY = "attacker-key-0000000000"


@pytest.fixture
async def providers() -> AsyncIterator[FakeProviders]:
    async with running_providers() as fakes:
        yield fakes


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    need(Path(CHROMIUM).exists(), f"Debian chromium at {CHROMIUM} (apt-get install chromium)")
    need(importlib.util.find_spec("playwright") is not None, "Playwright for Python (pip install playwright)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


class Observed:
    """Every response and console message the pages of one browser context saw."""

    def __init__(self, context: Any):
        self.responses: list[Any] = []
        self.console: list[str] = []
        context.on("response", lambda response: self.responses.append(response))
        context.on("console", lambda message: self.console.append(message.text))

    async def response_texts(self) -> dict[str, str]:
        """Return {"<n> <url>": headers and body} for every response (bodies read after the fact)."""
        texts = {}
        for number, response in enumerate(self.responses):
            try:
                body = (await response.body()).decode("utf-8", "replace")
            except Exception:  # noqa: BLE001 - redirects and aborted requests have no body to read
                body = ""
            headers = json.dumps(await response.all_headers())
            texts[f"{number} {response.url}"] = headers + "\n" + body
        return texts


async def test_browser_flow_keys_stay_out(tmp_path: Path, providers: FakeProviders, chromium: Any) -> None:
    run = await KeysideRun(tmp_path, "--browser").start()
    context = await chromium.new_context()
    observed = Observed(context)
    try:
        # An empty vault: the dashboard opens and reports that each keyed panel has no key.
        main_url = await run.next_url()
        main_page = await context.new_page()
        await main_page.goto(main_url)
        main = PlaywrightUiPage(main_page)
        await check_empty_dashboard(main)

        # Settings opens through the dashboard: keyside hands the browser a new one-time link.
        await main.click("[data-role=open-settings]")
        settings_url = await run.next_url()
        assert urlsplit(settings_url).port != urlsplit(main_url).port
        settings_page = await context.new_page()
        await settings_page.goto(settings_url)
        settings = PlaywrightUiPage(settings_page)

        # The proofs: no key (and no token) in the pages, cookies, responses or console.
        secrets_only, token = await run_keys_flow(main, settings, providers, "browser")
        needles = [*secrets_only, token]

        cookies = await context.cookies()
        assert cookies, "the session cookies are missing"
        assert [c["name"] for c in cookies if any(n in c["value"] for n in needles)] == []
        assert all(c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies)

        responses = await observed.response_texts()
        assert len(responses) > 20
        assert texts_containing(responses, secrets_only) == []
        token_carriers = texts_containing(responses, [token])
        assert token_carriers, "the local_api reply was not observed"
        assert all(urlsplit(name.split(" ", 1)[1]).path == "/keyside/ipc" for name in token_carriers)

        assert [m for m in observed.console if any(n in m for n in needles)] == []
    finally:
        await context.close()
        status = await run.stop()

    logs = run.log_texts()
    assert any(path.endswith("audit.log") for path in logs)
    assert texts_containing(logs, needles) == []
    assert texts_containing({"stdout": run.stdout, "stderr": run.stderr}, needles) == []
    assert status == 0


@pytest.fixture
async def foreign() -> AsyncIterator[str]:
    async with foreign_site() as origin:
        yield origin


async def test_foreign_origin_cannot_call(tmp_path: Path, providers: FakeProviders, chromium: Any,
                                          foreign: str) -> None:
    run = await KeysideRun(tmp_path, "--browser").start()
    context = await chromium.new_context()
    try:
        main_url = await run.next_url()
        page = await context.new_page()
        await page.goto(main_url)
        main = PlaywrightUiPage(page)
        await wait_for_panel(main, "panel-quotes", "missing")
        app_origin = f"http://127.0.0.1:{urlsplit(main_url).port}"

        # The tab leaves the app for another origin; that page tries every way in.
        await page.goto(f"{foreign}/attack.html")
        results = await page.evaluate("([app, key]) => window.attack(app, key)", [app_origin, ATTACKER_KEY])

        # Nothing could be read: requests needing a preflight fail in the browser, and the simple
        # ones either come back opaque or fail on the Cross-Origin-Resource-Policy header.
        assert results["cors-ipc"].startswith("blocked")
        assert results["cors-local-api"].startswith("blocked")
        assert results["read-page"].startswith("blocked")
        assert results["import-bridge"].startswith("blocked")
        assert results["simple-text"] in ("opaque opaque", "blocked: TypeError")
        assert results["simple-form"] in ("opaque opaque", "blocked: TypeError")
        # The simple requests reached keyside, which rejected them on their Origin header.
        rejected = "ipc call rejected reason=origin_not_allowed window=main"
        await run.wait_for_output(rf"(?s){rejected}.*{rejected}")

        # Another name for the same listener (a rebinding attack's view) gets no page at all.
        renamed = await page.goto(main_url.replace("127.0.0.1", "localhost").split("/keyside/")[0] + "/index.html")
        assert renamed.status == 421

        # Back in the app, nothing changed: the key is still missing and no call was audited.
        await page.goto(f"{app_origin}/index.html")
        await wait_for_panel(main, "panel-quotes", "missing")
    finally:
        await context.close()
        status = await run.stop()

    assert not providers.received_key("finnhub", ATTACKER_KEY)
    audit = "".join(text for path, text in run.log_texts().items() if path.endswith("audit.log"))
    assert "set_secret" not in audit
    assert status == 0


async def test_link_printed_without_browser(tmp_path: Path, providers: FakeProviders) -> None:
    run = await KeysideRun(tmp_path, "--browser", record_urls=False).start()
    try:
        url = await run.wait_for_output(r"http://127\.0\.0\.1:\d+/keyside/start\?code=[\w-]+", stream="stdout")
        code = url.rsplit("=", 1)[1]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            async with client.get(url, allow_redirects=False) as first:
                assert first.status == 303
            async with client.get(url, allow_redirects=False) as again:
                assert again.status == 303  # the code is used up, but this client has the session now
            async with aiohttp.ClientSession() as stranger, stranger.get(url, allow_redirects=False) as other:
                assert other.status == 403
    finally:
        status = await run.stop()

    assert code not in run.stderr
    assert texts_containing(run.log_texts(), [code]) == []
    assert not run.recorded_urls()
    assert status == 0


START_LINK = r"http://127\.0\.0\.1:\d+/keyside/start\?code=[\w-]+"


async def printed_link(run: KeysideRun, number: int) -> str:
    """Return the `number`-th (from 1) start link keyside printed on stdout, waiting for it."""
    await run.wait_for_output(rf"(?s)(?:{START_LINK}.*){{{number}}}", stream="stdout")
    return re.findall(START_LINK, run.stdout)[number - 1]


async def test_printed_links_in_chromium(tmp_path: Path, providers: FakeProviders, chromium: Any) -> None:
    run = await KeysideRun(tmp_path, "--browser", record_urls=False).start()
    context = await chromium.new_context()
    observed = Observed(context)
    console: list[tuple[str, str]] = []

    def record_problem(message: Any) -> None:
        if message.type in ("error", "warning"):
            console.append((message.text, message.location.get("url", "")))

    context.on("console", record_problem)
    stranger = await chromium.new_context()
    try:
        main_url = await printed_link(run, 1)
        main = await context.new_page()
        await main.goto(main_url)
        await wait_for_panel(PlaywrightUiPage(main), "panel-quotes", "missing")

        # Memory vault: the footer states that saved keys last until keyside exits.
        vault_note = main.locator('[data-role="vault-note"]')
        await vault_note.filter(has_text="memory").wait_for()
        assert await vault_note.text_content() == ("API keys are kept in memory only until keyside exits: "
                                                   "saved keys are lost when you quit.")

        # No browser to start, so Settings prints a new link and the page shows where it is.
        await main.locator('[data-role="open-settings"]').click()
        notice = main.locator('[data-role="notice"]')
        await notice.wait_for(state="visible")
        assert await notice.text_content() == "Open the link keyside printed in the terminal to open Settings."
        settings_url = await printed_link(run, 2)
        settings_code = settings_url.rsplit("=", 1)[1]
        assert settings_code not in await main.content()
        await main.screenshot(path=str(ARTIFACTS / "browser-link-printed-notice.png"), full_page=True)

        settings = await context.new_page()
        await settings.goto(settings_url)
        await settings.locator("article.secret-card").first.wait_for()
        intro = await settings.locator('[data-role="vault-note"]').text_content()
        assert "lost when you quit" in intro

        # The used link opened in a browser without the session shows a styled page.
        used = await stranger.new_page()
        response = await used.goto(settings_url)
        assert response.status == 403
        assert await used.locator("h1").text_content() == "This keyside link was already used"
        assert "keyside run" in await used.locator("main").text_content()
        font = await used.evaluate("getComputedStyle(document.body).fontFamily")
        assert "monospace" not in font
        assert settings_code not in await used.content()
        await used.screenshot(path=str(ARTIFACTS / "browser-link-used.png"), full_page=True)

        # The page servers returned no error status, the icon included. Only the sidecar's
        # responses fail here (no keys, no local model server), and the console names nothing else.
        page_hosts = {urlsplit(main_url).netloc, urlsplit(settings_url).netloc}
        failed = [response.url for response in observed.responses
                  if response.status >= 400 and urlsplit(response.url).netloc in page_hosts]
        assert failed == []
        icons = {urlsplit(response.url).path for response in observed.responses if "icon" in response.url}
        assert icons == {"/keyside/favicon.svg"}
        unexpected = [(text, where) for text, where in console if urlsplit(where).netloc in page_hosts]
        assert unexpected == []
    finally:
        await stranger.close()
        await context.close()
        status = await run.stop()

    assert settings_code not in run.stderr
    assert status == 0


# The bridge's own request to the sidecar, as a page makes it; resolves with the status it got.
FETCH_QUOTE = """() => import("/keyside/bridge.js")
  .then((bridge) => bridge.api.fetch("finnhub", "/api/v1/quote?symbol=AAPL"))
  .then(async (response) => ({ status: response.status, body: await response.text() }),
        (error) => ({ error: error.reason }))"""


async def test_sidecar_restart_refreshes_token(tmp_path: Path, providers: FakeProviders, chromium: Any) -> None:
    run = await KeysideRun(tmp_path, "--browser").start()
    context = await chromium.new_context()
    observed = Observed(context)
    try:
        main_url = await run.next_url()
        page = await context.new_page()
        await page.goto(main_url)
        main = PlaywrightUiPage(page)
        await wait_for_panel(main, "panel-quotes", "missing")
        before = await main.evaluate(FETCH_QUOTE)
        first = re.search(r"sidecar ready pid=(\d+) port=(\d+)", run.stderr)

        # The sidecar dies; the host starts a new one with a new token on the same port.
        os.kill(int(first.group(1)), signal.SIGKILL)
        restarted = await run.wait_for_output(rf"sidecar ready pid=(?!{first.group(1)}\b)\d+ port=\d+")
        after = await main.evaluate(FETCH_QUOTE)
    finally:
        await context.close()
        status = await run.stop()

    # Before and after the restart the sidecar itself responds to the page (424: no key stored).
    assert before["status"] == 424
    assert restarted.endswith(f"port={first.group(2)}")
    assert after["status"] == 424, after
    # In between, the old token got a 401 once and the bridge fetched the new one.
    quote_statuses = [r.status for r in observed.responses if "/api/svc/finnhub/api/v1/quote" in r.url]
    assert 401 in quote_statuses
    assert quote_statuses[-1] == 424
    assert status == 0

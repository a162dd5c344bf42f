"""Tests for the bundled monitor app and the hello example.

Four layers:
- the manifests load and bind each key to the right upstream and injection;
- the pages obey the Content-Security-Policy the page server sends: same-origin files only,
  no inline script, style or event handlers, and no HTML sinks or browser storage in the JS;
- the pages work in Chromium under `keyside run --browser` with the real host and sidecar,
  against fake providers on loopback (missing, saved, rejected and offline keys);
- the page logic (SSE and feed parsing, failure classification) runs in Chromium against a
  stub bridge, which also produces the few states the real stack gives only with effort.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from aiohttp import web

from conftest import need
from e2e.session import KeysideRun
from keyside.manifest import Manifest, bundled_app_dir, load_manifest
from keyside.shell.pages import asset_file

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
MONITOR_DIR = bundled_app_dir("monitor")
HELLO_DIR = REPO / "examples" / "hello"
ARTIFACTS = REPO / "test-artifacts"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
# The policy the page server sends with every page. Here connect-src names only 'self',
# because this test's stub serves the sidecar routes on the page origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Playwright waits this long for a page state before failing the test, in milliseconds.
PAGE_TIMEOUT_MS = 10_000

# The browser tests share one event loop, so they can share one Chromium, because a launch
# takes seconds on a busy 2-core machine. Each test still gets its own browser context.
shared_loop = pytest.mark.asyncio(loop_scope="module")


def app_dirs() -> dict[str, Path]:
    assert MONITOR_DIR is not None, "the monitor app is not bundled in the keyside package"
    return {"monitor": MONITOR_DIR, "hello": HELLO_DIR}


def page_files(suffix: str) -> list[tuple[str, Path]]:
    files = []
    for app, folder in app_dirs().items():
        pages = load_manifest(folder).pages_dir
        files += [(app, path) for path in sorted(pages.rglob(f"*{suffix}"))]
    return files


def file_id(case: tuple[str, Path]) -> str:
    app, path = case
    return f"{app}:{path.name}"


# --- Manifests ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitor() -> Manifest:
    return load_manifest("monitor")


def test_monitor_loads_by_bundled_id(monitor: Manifest) -> None:
    assert monitor.app_id == "monitor"
    assert monitor.path == MONITOR_DIR / "keyside.toml"
    assert (monitor.pages_dir / "index.html").is_file()


WINDOW_CASES = [
    pytest.param("main", "index.html", ("data",), id="main-dashboard-data-only"),
    pytest.param("settings", "settings.html", ("data", "secrets"), id="settings-data-and-secrets"),
]


@pytest.mark.parametrize(("label", "page", "capabilities"), WINDOW_CASES)
def test_monitor_window_capabilities(monitor: Manifest, label: str, page: str,
                                     capabilities: tuple[str, ...]) -> None:
    window = monitor.windows[label]
    assert window.page == page
    assert window.capabilities == capabilities


@dataclass(frozen=True)
class ServiceCase:
    service: str
    upstream: str
    secret: str | None
    kind: str | None
    name: str | None
    methods: tuple[str, ...]
    paths: tuple[str, ...]
    validate_path: str | None
    allow_private: bool = False


SERVICE_CASES = [
    ServiceCase("finnhub", "https://finnhub.io", "FINNHUB_API_KEY", "header", "X-Finnhub-Token",
                ("GET",), ("/api/v1/",), "/api/v1/quote?symbol=AAPL"),
    ServiceCase("fred", "https://api.stlouisfed.org", "FRED_API_KEY", "query", "api_key",
                ("GET",), ("/fred/",),
                "/fred/series/observations?series_id=UNRATE&file_type=json&limit=1&sort_order=desc"),
    ServiceCase("groq", "https://api.groq.com", "GROQ_API_KEY", "bearer", None,
                ("GET", "POST"), ("/openai/v1/",), "/openai/v1/models"),
    ServiceCase("openrouter", "https://openrouter.ai", "OPENROUTER_API_KEY", "bearer", None,
                ("GET", "POST"), ("/api/v1/",), "/api/v1/key"),
    ServiceCase("ollama", "http://127.0.0.1:11434", None, None, None,
                ("GET", "POST"), ("/api/", "/v1/"), None, allow_private=True),
]


@pytest.mark.parametrize("case", SERVICE_CASES, ids=lambda case: case.service)
def test_monitor_service_binding(monitor: Manifest, case: ServiceCase) -> None:
    spec = monitor.services[case.service]
    assert spec.upstream == case.upstream
    assert spec.secret == case.secret
    assert (spec.inject.kind if spec.inject else None) == case.kind
    assert (spec.inject.name if spec.inject else None) == case.name
    assert spec.methods == case.methods
    assert spec.paths == case.paths
    assert (spec.validate.path if spec.validate else None) == case.validate_path
    assert spec.allow_private_network is case.allow_private


def test_monitor_secrets_all_used(monitor: Manifest) -> None:
    used = {spec.secret for spec in monitor.services.values() if spec.secret}
    assert used == set(monitor.secrets)
    for secret in monitor.secrets.values():
        assert secret.description.strip()


def test_monitor_ai_providers_configured(monitor: Manifest) -> None:
    providers = monitor.ui["ai_providers"]
    assert providers == ["groq", "openrouter", "ollama"]
    for name in providers:
        entry = monitor.ui["ai"][name]
        assert name in monitor.services
        assert entry["path"].endswith("/chat/completions")
        assert any(entry["path"].startswith(prefix) for prefix in monitor.services[name].paths)
        assert "POST" in monitor.services[name].methods
        assert entry["model"]


def test_monitor_ui_lists(monitor: Manifest) -> None:
    for url in monitor.ui["feeds"]:
        assert urlsplit(url).scheme == "https", url
    assert monitor.ui["watchlist"]
    assert monitor.ui["fred_series"]
    for name, url in monitor.ui["key_pages"].items():
        assert name in monitor.secrets
        assert url.startswith("https://")


def test_hello_manifest_one_keyed_service() -> None:
    hello = load_manifest(HELLO_DIR)
    assert hello.app_id == "hello"
    assert list(hello.secrets) == ["GITHUB_TOKEN"]
    assert list(hello.services) == ["github"]
    github = hello.services["github"]
    assert github.upstream == "https://api.github.com"
    assert github.inject is not None and github.inject.kind == "bearer"
    assert hello.windows["main"].capabilities == ("data", "secrets")


# --- Static page checks ---------------------------------------------------------------------


class PageScan(HTMLParser):
    """Collect what a page loads and everything the CSP would block in it."""

    URL_ATTRIBUTES = {"src", "href", "action", "formaction", "poster", "data", "srcset", "background"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name, value in values.items():
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...> is an inline event handler")
            if name == "style":
                self.problems.append(f"<{tag} style=...> is an inline style")
            if name in self.URL_ATTRIBUTES:
                self.urls.append((tag, name, value))
        if tag == "style":
            self.problems.append("<style> element is an inline style")
        if tag == "script":
            if "src" not in values:
                self._in_script = True
                self.problems.append("<script> without src is an inline script")
            else:
                self.scripts.append(values["src"])
                if values.get("type") != "module":
                    self.problems.append(f"<script src={values['src']!r}> is not type=module")
        if tag == "link" and "stylesheet" in values.get("rel", "").split():
            self.stylesheets.append(values.get("href", ""))
        if tag in ("iframe", "object", "embed", "base"):
            self.problems.append(f"<{tag}> element")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def scan(path: Path) -> PageScan:
    parser = PageScan()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def is_same_origin_reference(value: str) -> bool:
    """True for a relative URL or an absolute path: no scheme, no host."""
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc and not value.startswith("//") and "\\" not in value


@pytest.mark.parametrize("case", page_files(".html"), ids=file_id)
def test_page_has_no_inline_code(case: tuple[str, Path]) -> None:
    assert scan(case[1]).problems == []


@pytest.mark.parametrize("case", page_files(".html"), ids=file_id)
def test_page_references_same_origin(case: tuple[str, Path]) -> None:
    page = scan(case[1])
    assert page.scripts, "each page loads its code from a script file"
    for tag, attribute, value in page.urls:
        if tag == "a" and value.startswith("#"):
            continue
        assert is_same_origin_reference(value), f"<{tag} {attribute}={value!r}> leaves the app's origin"


@pytest.mark.parametrize("case", page_files(".html"), ids=file_id)
def test_page_referenced_files_exist(case: tuple[str, Path]) -> None:
    app, path = case
    page = scan(path)
    for reference in page.scripts + page.stylesheets:
        target = resolve_page_reference(path, reference, app)
        assert target is None or target.is_file(), f"{reference!r} does not exist"


def resolve_page_reference(page: Path, reference: str, app: str) -> Path | None:
    """Return the file a same-origin reference names, or None for the shell's /keyside/ assets."""
    if reference.startswith("/keyside/"):
        return None
    if reference.startswith("/"):
        return load_manifest(app_dirs()[app]).pages_dir / reference.lstrip("/")
    return (page.parent / reference).resolve()


IMPORT_PATTERN = re.compile(
    r"""^\s*(?:import|export)\b[^'"]*?\bfrom\s*["']([^"']+)["']|^\s*import\s*["']([^"']+)["']""", re.MULTILINE)
DYNAMIC_IMPORT_PATTERN = re.compile(r"\bimport\s*\(")


@pytest.mark.parametrize("case", page_files(".js"), ids=file_id)
def test_js_imports_same_origin(case: tuple[str, Path]) -> None:
    app, path = case
    text = path.read_text(encoding="utf-8")
    assert not DYNAMIC_IMPORT_PATTERN.search(text), "dynamic import() hides what a page loads"
    for match in IMPORT_PATTERN.finditer(text):
        specifier = match.group(1) or match.group(2)
        assert specifier == "/keyside/bridge.js" or specifier.startswith("./"), specifier
        target = resolve_page_reference(path, specifier, app)
        assert target is None or target.is_file(), f"{path.name} imports missing {specifier!r}"


@pytest.mark.parametrize("case", page_files(".js"), ids=file_id)
def test_js_passes_node_check(case: tuple[str, Path]) -> None:
    node = shutil.which("node")
    need(node is not None, "node is not installed (apt-get install nodejs)")
    # A .mjs copy, because `node --check` on a .js file may treat it as CommonJS and
    # accept an ES module with a syntax error.
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / (case[1].stem + ".mjs")
        shutil.copyfile(case[1], copy)
        result = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


FORBIDDEN_JS = [
    pytest.param(r"\.innerHTML\b", id="innerHTML"),
    pytest.param(r"\.outerHTML\b", id="outerHTML"),
    pytest.param(r"insertAdjacentHTML", id="insertAdjacentHTML"),
    pytest.param(r"document\.write", id="document-write"),
    pytest.param(r"\beval\s*\(", id="eval"),
    pytest.param(r"\bnew\s+Function\b", id="new-Function"),
    pytest.param(r"set(?:Timeout|Interval)\(\s*[\"'`]", id="string-timer"),
    pytest.param(r"\blocalStorage\b", id="localStorage"),
    pytest.param(r"\bsessionStorage\b", id="sessionStorage"),
    pytest.param(r"\bindexedDB\b", id="indexedDB"),
    pytest.param(r"document\.cookie", id="cookie"),
    pytest.param(r"\bwindow\.(?:keyside|token|apiKey)\b", id="window-global"),
]


@pytest.mark.parametrize("pattern", FORBIDDEN_JS)
def test_js_avoids_html_sinks_and_storage(pattern: str) -> None:
    offenders = [f"{app}:{path.name}" for app, path in page_files(".js")
                 if re.search(pattern, path.read_text(encoding="utf-8"))]
    assert offenders == []


# Namespace names are identifiers, not addresses the page loads.
ALLOWED_URL_LITERALS = {"http://www.w3.org/2000/svg"}


@pytest.mark.parametrize("case", page_files(".js"), ids=file_id)
def test_js_names_no_remote_url(case: tuple[str, Path]) -> None:
    literals = set(re.findall(r"https?://[^\s\"'`)]+", case[1].read_text(encoding="utf-8")))
    assert literals <= ALLOWED_URL_LITERALS


@pytest.mark.parametrize("case", page_files(".css"), ids=file_id)
def test_css_loads_nothing(case: tuple[str, Path]) -> None:
    text = case[1].read_text(encoding="utf-8")
    assert "@import" not in text
    assert "@font-face" not in text
    for value in re.findall(r"url\(\s*([^)]*)\)", text):
        assert value.strip("\"' ").startswith("data:"), value


# --- Browser tests: shared pieces -----------------------------------------------------------

# Collects CSP violations in the page, so a test can assert the pages trigger none.
CSP_LISTENER_JS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (event) => window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`));
"""

BRIEF_TOKENS = ["- Rates", " held", " steady", " while", " chip", " makers", " rallied."]
# Tokens a held stream sends before it waits for the test (see FakeUpstreams.stream_gate).
BRIEF_TOKENS_BEFORE_GATE = 3


def fake_quote(symbol: str) -> dict[str, Any]:
    """Return a Finnhub quote; Finnhub returns zeros for an unknown symbol, as ZZZZ does here."""
    if symbol == "ZZZZ":
        return {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
    base = 100 + sum(map(ord, symbol)) % 50
    return {"c": base + 1.25, "d": 1.25, "dp": 1.02, "h": base + 2, "l": base - 1, "o": base, "pc": base,
            "t": 1748966400}


def fake_observations() -> dict[str, Any]:
    observations = [{"date": f"{2015 + i // 12}-{i % 12 + 1:02d}-01", "value": f"{5 - (i % 12) / 10:.1f}"}
                    for i in range(120)]
    observations[5]["value"] = "."  # FRED's spelling of a missing value
    return {"observations": observations}


async def stream_chat(request: web.Request, gate: asyncio.Event | None) -> web.StreamResponse:
    """Stream a chat completion response as server-sent events, one token per event.

    With a `gate`, the stream sends BRIEF_TOKENS_BEFORE_GATE tokens and waits for the test to
    set it, so a test can see the page show part of the response before the rest exists.
    """
    body = await request.json()
    assert body["stream"] is True
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index, token in enumerate(BRIEF_TOKENS):
        if index == BRIEF_TOKENS_BEFORE_GATE and gate is not None:
            await gate.wait()
        chunk = {"choices": [{"index": 0, "delta": {"content": token}}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    need(Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


async def open_page(browser: Any, url: str, *, width: int = 1240, height: int = 900) -> Any:
    """Open `url` in a new browser context that records CSP violations and page errors."""
    # A fixed locale, because the pages format numbers and dates with the browser's locale.
    context = await browser.new_context(viewport={"width": width, "height": height}, locale="en-US")
    await context.add_init_script(CSP_LISTENER_JS)
    page = await context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    await page.goto(url)
    return page


async def open_in_context(context_page: Any, url: str) -> Any:
    """Open `url` in another tab of `context_page`'s context (sharing its cookies)."""
    page = await context_page.context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    await page.goto(url)
    return page


class Pages:
    """Opens pages for one test and closes their browser contexts when the test ends."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.opened: list[Any] = []

    async def open(self, url: str, *, width: int = 1240, height: int = 900) -> Any:
        page = await open_page(self.browser, url, width=width, height=height)
        self.opened.append(page)
        return page

    async def close(self) -> None:
        for page in self.opened:
            await page.context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def pages(browser: Any) -> AsyncIterator[Pages]:
    opener = Pages(browser)
    try:
        yield opener
    finally:
        await opener.close()


async def panel_state(page: Any, panel: str, state: str) -> Any:
    """Wait until panel `panel` (e.g. "quotes") is in `state`; return the panel's locator."""
    await page.wait_for_selector(f'#panel-{panel}[data-state="{state}"]')
    return page.locator(f"#panel-{panel}")


async def assert_clean(page: Any) -> None:
    assert await page.evaluate("window.__cspViolations") == []
    assert page.errors == []


def screenshot_path(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)


# --- Browser tests against the real shell, host and sidecar ---------------------------------
#
# `keyside run --browser` in a subprocess (tests/e2e/session.py), with a copy of the monitor's
# manifest whose services point at the fake providers below and whose pages are the real ones.

# The provider origins in the bundled manifest, replaced by the fakes' loopback origins.
REAL_UPSTREAMS = {
    "finnhub": "https://finnhub.io",
    "fred": "https://api.stlouisfed.org",
    "groq": "https://api.groq.com",
    "openrouter": "https://openrouter.ai",
}
KEYS = {
    "FINNHUB_API_KEY": f"fh-monitor-{secrets.token_hex(10)}",
    "FRED_API_KEY": f"fred{secrets.token_hex(14)}",
    "GROQ_API_KEY": f"gsk_monitor_{secrets.token_hex(12)}",
}
# A key a user pastes by mistake; every fake rejects it.
WRONG_KEY = "wrong-key-0000000000000000"
FEED_FILES = {
    "/rss.xml": ("monitor_feed_rss.xml", "application/rss+xml"),
    "/atom.xml": ("monitor_feed_atom.xml", "application/atom+xml"),
    "/hostile.xml": ("monitor_feed_hostile.xml", "application/rss+xml"),
}


@dataclass
class Received:
    """One request as a fake provider received it."""

    service: str
    method: str
    path_qs: str
    headers: dict[str, str]


class FakeUpstreams:
    """Finnhub, FRED, Groq, OpenRouter and a feed server, each on a loopback port the OS assigns.

    Each provider takes its key the way the real one does (Finnhub: X-Finnhub-Token; FRED: the
    api_key query parameter, 400 when wrong; Groq and OpenRouter: a bearer token) and records
    every request. `behaviour[service]` = "invalid" (401 whatever the key) or "rate_limited"
    (429) overrides the response. `closed_port` refuses connections, like a local Ollama that is
    not running.
    """

    def __init__(self) -> None:
        self.behaviour: dict[str, str] = {}
        self.received: list[Received] = []
        self.stream_gate: asyncio.Event | None = None
        self.ports: dict[str, int] = {}
        self._runners: dict[str, web.AppRunner] = {}
        self._closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    async def start(self) -> FakeUpstreams:
        # Bound but never listening: a connection to this port is refused.
        self._closed.bind(("127.0.0.1", 0))
        self.closed_port = self._closed.getsockname()[1]
        for name in (*REAL_UPSTREAMS, "feeds", "github"):
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handler(name))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners[name] = runner
            self.ports[name] = runner.addresses[0][1]
        return self

    def origin(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def stop_service(self, name: str) -> None:
        """Shut one fake down, so its port refuses connections as an offline server would."""
        await self._runners.pop(name).cleanup()

    async def close(self) -> None:
        for runner in self._runners.values():
            await runner.cleanup()
        self._runners.clear()
        self._closed.close()

    def paths(self, service: str) -> list[str]:
        return [seen.path_qs for seen in self.received if seen.service == service]

    def _handler(self, name: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.received.append(Received(name, request.method, request.path_qs, dict(request.headers)))
            return await self.respond(name, request)
        return handle

    async def respond(self, name: str, request: web.Request) -> web.StreamResponse:
        if name == "feeds":
            if request.path not in FEED_FILES:
                return web.Response(status=404)
            data_file, content_type = FEED_FILES[request.path]
            return web.Response(body=(DATA / data_file).read_bytes(), content_type=content_type)
        if name == "github":
            if request.headers.get("Authorization") != f"Bearer {GITHUB_TOKEN}":
                return web.json_response({"message": "Bad credentials"}, status=401)
            return web.json_response({"login": "octocat", "name": "The Octocat"})

        behaviour = self.behaviour.get(name, "data")
        if behaviour == "invalid":
            return web.json_response({"error": "Invalid API key."}, status=401)
        if behaviour == "rate_limited":
            return web.json_response({"error": "API limit reached."}, status=429)
        if not self.key_accepted(name, request):
            if name == "fred":
                return web.json_response({"error_code": 400, "error_message": "Bad Request. The value for "
                                          "variable api_key is not registered."}, status=400)
            return web.json_response({"error": "Invalid API key."}, status=401)

        path = request.path
        if name == "finnhub" and path == "/api/v1/quote":
            return web.json_response(fake_quote(request.query.get("symbol", "")))
        if name == "fred" and path == "/fred/series/observations":
            return web.json_response(fake_observations())
        if name == "fred" and path == "/fred/series":
            return web.json_response({"seriess": [{"id": request.query.get("series_id"),
                                                   "title": "Unemployment Rate", "units": "Percent"}]})
        if path.endswith("/chat/completions") and request.method == "POST":
            return await stream_chat(request, self.stream_gate)
        if path in ("/openai/v1/models", "/api/v1/key"):
            return web.json_response({"data": []})
        return web.json_response({"error": "not found"}, status=404)

    @staticmethod
    def key_accepted(name: str, request: web.Request) -> bool:
        if name == "finnhub":
            return request.headers.get("X-Finnhub-Token") == KEYS["FINNHUB_API_KEY"]
        if name == "fred":
            return request.query.get("api_key") == KEYS["FRED_API_KEY"]
        if name == "groq":
            return request.headers.get("Authorization") == f"Bearer {KEYS['GROQ_API_KEY']}"
        return False


@pytest_asyncio.fixture(loop_scope="module")
async def upstreams() -> AsyncIterator[FakeUpstreams]:
    fakes = await FakeUpstreams().start()
    try:
        yield fakes
    finally:
        await fakes.close()


def feed_urls(upstreams: FakeUpstreams) -> list[str]:
    """The test feeds: RSS, Atom, the hostile RSS feed, and one on a port that refuses connections."""
    base = upstreams.origin("feeds")
    return [f"{base}/rss.xml", f"{base}/atom.xml", f"{base}/hostile.xml",
            f"http://127.0.0.1:{upstreams.closed_port}/offline.xml"]


def write_monitor_manifest(folder: Path, upstreams: FakeUpstreams) -> Path:
    """Write the bundled monitor manifest with its upstreams and feeds moved to the fakes."""
    text = (MONITOR_DIR / "keyside.toml").read_text(encoding="utf-8")
    text = text.replace('id = "monitor"', f'id = "monitor-pages-test"\npages = "{MONITOR_DIR / "pages"}"', 1)
    for service, origin in REAL_UPSTREAMS.items():
        line = f'upstream = "{origin}"'
        assert line in text, line
        text = text.replace(line, f'upstream = "{upstreams.origin(service)}"\nallow_private_network = true')
    text = text.replace('upstream = "http://127.0.0.1:11434"', f'upstream = "http://127.0.0.1:{upstreams.closed_port}"')
    feeds = ", ".join(f'"{url}"' for url in feed_urls(upstreams))
    text, count = re.subn(r"^feeds = \[[^\]]*\]", f"feeds = [{feeds}]", text, flags=re.MULTILINE)
    assert count == 1
    text += ("\n[network]\n"
             f'allow_private = ["127.0.0.1:{upstreams.ports["feeds"]}", "127.0.0.1:{upstreams.closed_port}"]\n')
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keyside.toml").write_text(text, encoding="utf-8")
    load_manifest(folder)  # fails here, with the manifest's own message, if the copy is invalid
    return folder


@contextlib.asynccontextmanager
async def keyside_browser_mode(tmp_path: Path, app: Path, browser: Any) -> AsyncIterator[tuple[KeysideRun, Any]]:
    """Run `keyside run APP --browser --vault memory`; yield it and its main window's page."""
    run = await KeysideRun(tmp_path / "run", "--browser", app=app).start()
    page = None
    try:
        main_url = await run.next_url()
        page = await open_page(browser, main_url)
        yield run, page
    finally:
        if page is not None:
            await page.context.close()
        status = await run.stop()
        assert status == 0, run.stderr[-3000:]


async def open_settings_window(run: KeysideRun, main: Any) -> Any:
    """Press Settings on the dashboard and open the link keyside hands the browser."""
    await main.locator('[data-role="open-settings"]').click()
    settings = await open_in_context(main, await run.next_url())
    await settings.locator("article.secret-card").first.wait_for()
    return settings


async def card_action(page: Any, name: str, button: str, expect: str) -> Any:
    """Press `button` on the card of secret `name`; wait until its message contains `expect`."""
    card = page.locator(f'article[data-secret="{name}"]')
    message = card.locator(".secret-message")
    before = await message.text_content()
    await card.get_by_role("button", name=button, exact=True).click()
    await page.wait_for_function("""([node, before, expect]) => node.textContent !== before
        && node.textContent.includes(expect) && node.closest("article").getAttribute("aria-busy") !== "true" """,
                                 arg=[await message.element_handle(), before, expect])
    return message


@shared_loop
async def test_real_dashboard_without_keys(tmp_path: Path, browser: Any, upstreams: FakeUpstreams) -> None:
    app = write_monitor_manifest(tmp_path / "app", upstreams)
    async with keyside_browser_mode(tmp_path, app, browser) as (run, main):
        for panel, secret in (("quotes", "FINNHUB_API_KEY"), ("series", "FRED_API_KEY")):
            locator = await panel_state(main, panel, "missing")
            assert secret in await locator.locator(".status-hint").text_content()
            assert await locator.get_attribute("data-reason") == "secret_not_configured"
            assert await locator.get_by_role("button", name="Open settings").count() == 1
        brief = await panel_state(main, "brief", "missing")
        hint = await brief.locator(".status-hint").text_content()
        assert hint == ("Groq: no key set (GROQ_API_KEY). OpenRouter: no key set (OPENROUTER_API_KEY). "
                        "Ollama: cannot be reached.")
        assert upstreams.paths("finnhub") == [], "no request leaves keyside without a key"

        # Headlines come through the real feed proxy; the feed on a closed port is named.
        headlines = await panel_state(main, "headlines", "data")
        titles = await headlines.locator(".headline-link").all_text_contents()
        assert "Central bank holds rates steady" in titles
        assert "Compiler release speeds up builds" in titles
        note = await headlines.locator(".panel-note").text_content()
        assert f"127.0.0.1:{upstreams.closed_port} (connect_failed)" in note

        # The hostile feed's markup shows as text and its script-bearing links are dropped.
        for title in ("Image title", "Script title", "Anchor title", "SVG title", "Frame title"):
            assert title in titles
        hrefs = await headlines.locator("a").evaluate_all("links => links.map((a) => a.getAttribute('href'))")
        assert {urlsplit(href).scheme for href in hrefs} == {"http", "https"}, hrefs
        assert "https://safe.example/ok" in hrefs
        for tag in ("img", "script", "svg", "iframe"):
            assert await headlines.locator(tag).count() == 0, tag
        assert await main.evaluate("window.__feedPwned") is None

        # A headline opens in the system browser, and the dashboard stays where it is.
        await headlines.get_by_role("link", name="Central bank holds rates steady").click()
        assert await run.next_url() == "https://news.example/rates"
        assert urlsplit(main.url).path == "/index.html"

        settings = await open_settings_window(run, main)
        assert await settings.locator("article.secret-card").count() == 4
        await settings.locator('article[data-secret="FRED_API_KEY"]').get_by_role("link", name="Get a key").click()
        assert await run.next_url() == "https://fred.stlouisfed.org/docs/api/api_key.html"
        await main.screenshot(path=screenshot_path("monitor-dashboard-no-keys.png"), full_page=True)
        await assert_clean(main)
        await assert_clean(settings)


@shared_loop
async def test_real_keys_data_and_failures(tmp_path: Path, browser: Any, upstreams: FakeUpstreams) -> None:
    app = write_monitor_manifest(tmp_path / "app", upstreams)
    upstreams.stream_gate = asyncio.Event()
    async with keyside_browser_mode(tmp_path, app, browser) as (run, main):
        await panel_state(main, "quotes", "missing")
        settings = await open_settings_window(run, main)
        finnhub = settings.locator('article[data-secret="FINNHUB_API_KEY"]')
        field_ = finnhub.get_by_label("New value")
        assert await field_.get_attribute("type") == "password"

        # A wrong key fails validation and is not saved.
        await field_.fill(WRONG_KEY)
        message = await card_action(settings, "FINNHUB_API_KEY", "Validate", "Invalid")
        assert await message.get_attribute("data-kind") == "error"
        assert await finnhub.get_attribute("data-configured") == "false"

        for name, value in KEYS.items():
            await settings.locator(f"#secret-{name}-value").fill(value)
            message = await card_action(settings, name, "Validate", "Valid")
            assert (await message.text_content()).startswith("New value. Valid"), name
            await card_action(settings, name, "Save", "Saved")
            assert await settings.locator(f"#secret-{name}-value").input_value() == ""
            card = settings.locator(f'article[data-secret="{name}"]')
            assert await card.get_attribute("data-configured") == "true"
            assert "Last check: valid" in await card.locator(".secret-validation").text_content()
        message = await card_action(settings, "GROQ_API_KEY", "Validate", "Saved key")
        assert "Valid" in await message.text_content()

        # Back on the dashboard, the panels that lacked a key load at once.
        await main.evaluate("window.dispatchEvent(new Event('focus'))")
        quotes = await panel_state(main, "quotes", "data")
        assert await quotes.locator("tr.quote").count() == len(load_manifest(app).ui["watchlist"])
        series = await panel_state(main, "series", "data")
        assert await series.locator("svg.chart path.chart-line").count() == 1
        assert await series.locator(".series-value").text_content() == "3.9"

        # The brief shows the first tokens while the fake keeps back the rest.
        partial = "".join(BRIEF_TOKENS[:BRIEF_TOKENS_BEFORE_GATE])
        await main.wait_for_function(
            "(text) => document.querySelector('#panel-brief .brief-text')?.textContent === text", arg=partial)
        assert await main.locator("#panel-brief").get_attribute("data-stream") == "streaming"
        upstreams.stream_gate.set()
        await main.wait_for_selector('#panel-brief[data-stream="complete"]')
        assert await main.locator("#panel-brief .brief-text").text_content() == "".join(BRIEF_TOKENS)
        await main.screenshot(path=screenshot_path("monitor-dashboard.png"), full_page=True)
        await settings.screenshot(path=screenshot_path("monitor-settings.png"), full_page=True)

        # Each request stayed under its service's paths, with the key put in by the sidecar.
        monitor = load_manifest("monitor")
        for seen in upstreams.received:
            if seen.service in monitor.services:
                prefixes = monitor.services[seen.service].paths
                assert any(seen.path_qs.startswith(prefix) for prefix in prefixes), seen.path_qs
        assert upstreams.paths("finnhub")[-1].startswith("/api/v1/quote?symbol=")
        assert any(path.startswith("/fred/series/observations?series_id=UNRATE&file_type=json")
                   for path in upstreams.paths("fred"))
        assert "/openai/v1/chat/completions" in upstreams.paths("groq")

        # The upstream rejects the key: HTTP 401 passes through the sidecar to the panel.
        upstreams.behaviour["finnhub"] = "invalid"
        await main.locator('#panel-quotes [data-role="refresh"]').click()
        quotes = await panel_state(main, "quotes", "invalid")
        assert await quotes.locator(".status-text").text_content() == "Finnhub rejected the key (HTTP 401)."

        # The upstream goes offline: the guard's connect_failed reaches the panel unchanged.
        await upstreams.stop_service("fred")
        await main.locator('#panel-series [data-role="refresh"]').click()
        series = await panel_state(main, "series", "unreachable")
        assert await series.get_attribute("data-reason") == "connect_failed"

        upstreams.behaviour["groq"] = "rate_limited"
        await main.locator('#panel-brief [data-role="refresh"]').click()
        brief = await panel_state(main, "brief", "rate_limited")
        assert await brief.locator(".status-text").text_content() == "Groq rate limit reached."

        # Delete needs a second press, then the dashboard reports the key missing again.
        await settings.locator('article[data-secret="FINNHUB_API_KEY"]').get_by_role("button", name="Delete").click()
        await card_action(settings, "FINNHUB_API_KEY", "Confirm delete", "Deleted")
        assert await finnhub.get_attribute("data-configured") == "false"
        upstreams.behaviour.pop("finnhub")
        await main.locator('#panel-quotes [data-role="refresh"]').click()
        await panel_state(main, "quotes", "missing")

        # No key is in either page: DOM, field values or storage.
        for page in (main, settings):
            content = await page.content()
            values = " ".join(await page.locator("input").evaluate_all("inputs => inputs.map((i) => i.value)"))
            for key in (*KEYS.values(), WRONG_KEY):
                assert key not in content
                assert key not in values
            assert await page.evaluate("localStorage.length + sessionStorage.length") == 0
            await assert_clean(page)


GITHUB_TOKEN = f"ghp_monitor_test_{secrets.token_hex(8)}"


@shared_loop
async def test_real_hello_saves_token_and_greets(tmp_path: Path, browser: Any, upstreams: FakeUpstreams) -> None:
    text = (HELLO_DIR / "keyside.toml").read_text(encoding="utf-8")
    text = text.replace('id = "hello"', f'id = "hello-test"\npages = "{HELLO_DIR / "pages"}"', 1)
    text = text.replace('upstream = "https://api.github.com"',
                        f'upstream = "{upstreams.origin("github")}"\nallow_private_network = true')
    app = tmp_path / "hello"
    app.mkdir()
    (app / "keyside.toml").write_text(text, encoding="utf-8")

    async with keyside_browser_mode(tmp_path, app, browser) as (_, page):
        state = page.locator("#token-state")
        greeting = page.locator("#greeting")
        await page.wait_for_function("(node) => node.textContent.includes('not set')", arg=await state.element_handle())

        await page.get_by_role("button", name="Say hello").click()
        await page.wait_for_function("(node) => node.textContent.includes('secret_not_configured')",
                                     arg=await greeting.element_handle())
        assert upstreams.paths("github") == []

        await page.get_by_label("GitHub token").fill(GITHUB_TOKEN)
        await page.get_by_role("button", name="Save token").click()
        await page.wait_for_function("(node) => node.textContent === 'GITHUB_TOKEN is set.'",
                                     arg=await state.element_handle())
        assert await page.get_by_label("GitHub token").input_value() == ""

        await page.get_by_role("button", name="Say hello").click()
        await page.wait_for_function("(node) => node.textContent === 'Hello, The Octocat!'",
                                     arg=await greeting.element_handle())
        assert upstreams.paths("github") == ["/user"]
        assert GITHUB_TOKEN not in await page.content()
        await assert_clean(page)


# --- Browser tests against a stub bridge ----------------------------------------------------
#
# Page behaviour that the real stack produces only with effort (no open_window command, every
# feed offline, a provider order, an XHTML feed) runs against a stub. The pages are served on
# loopback with the page server's CSP, and /keyside/bridge.js is a stub whose commands and
# sidecar routes this test's server handles.

STUB_BRIDGE_JS = """
export class KeysideError extends Error {
  constructor(reason, message) { super(message); this.name = "KeysideError"; this.reason = reason; }
}
export async function invoke(command, args) {
  const response = await fetch("/stub/ipc", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ command, args }),
  });
  const body = await response.json();
  if (!body.ok) { throw new KeysideError(body.error.reason, body.error.message); }
  return body.result;
}
export const api = {
  fetch(service, path, init = {}) { return fetch(`/stub/svc/${service}${path}`, init); },
  feed(url, init = {}) { return fetch(`/stub/feed?url=${encodeURIComponent(url)}`, init); },
};
export function onSidecarState(callback) { callback({ state: "ready", reason: null }); }
"""

STUB_FEEDS = {
    "https://feeds.test/business.rss": "monitor_feed_rss.xml",
    "https://feeds.test/tech.atom": "monitor_feed_atom.xml",
    "https://feeds.test/hostile.atom": "monitor_feed_hostile_xhtml.xml",
}


def sidecar_error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


@dataclass
class StubHost:
    """The host commands and sidecar routes the pages call, responding like the real ones.

    A keyed service whose secret is not in `secrets` returns 424 secret_not_configured, and
    a keyless one 502 connect_failed (nothing listens), as the sidecar does. Feeds come from
    STUB_FEEDS; any other feed URL returns 502 dns_failed.
    """

    manifest: Manifest
    secrets: dict[str, str] = field(default_factory=dict)
    ui_overrides: dict[str, Any] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (service, path with query)
    commands: list[dict[str, Any]] = field(default_factory=list)
    # runtime_info's vault field, and open_window's result when set (else unknown_command).
    vault: dict[str, Any] = field(default_factory=lambda: {"kind": "system", "display_name": "system keyring",
                                                           "file_name": None})
    open_window_result: dict[str, Any] | None = None
    # Secret name -> (recorded origins, current origins) for keys list_secrets reports as withheld.
    withheld: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)

    def run_command(self, command: str, args: dict[str, Any]) -> Any:
        self.commands.append({"command": command, "args": args})
        if command == "app_config":
            return {
                "app": {"id": self.manifest.app_id, "name": self.manifest.name},
                "ui": {**self.manifest.ui, **self.ui_overrides},
                "services": [{"name": name, "secret": spec.secret} for name, spec in self.manifest.services.items()],
                "windows": [{"label": label, "page": spec.page, "title": spec.title}
                            for label, spec in self.manifest.windows.items()],
            }
        if command == "runtime_info":
            return {"os": "Linux", "python": "3.11", "keyside": "0.1.0", "vault": self.vault,
                    "sidecar": {"state": "ready", "reason": None}}
        if command == "open_window" and self.open_window_result is not None:
            return self.open_window_result
        if command == "set_secret":
            self.secrets[args["name"]] = args["value"]
            return {"name": args["name"], "configured": True, "sidecar": "updated"}
        if command == "list_secrets":
            rows = []
            for name, spec in self.manifest.secrets.items():
                row = {"name": name, "description": spec.description, "configured": name in self.secrets,
                       "last_validation": None}
                if name in self.withheld:
                    recorded, current = self.withheld[name]
                    row.update(configured=False, binding="mismatch", recorded_origins=recorded,
                               current_origins=current)
                rows.append(row)
            return rows
        raise LookupError(command)

    async def ipc(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            result = self.run_command(body["command"], body.get("args", {}))
        except LookupError:
            return web.json_response({"ok": False, "error": {"reason": "unknown_command",
                                                             "message": f"Unknown command {body['command']!r}."}})
        return web.json_response({"ok": True, "result": result})

    async def service(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["service"]
        path = "/" + request.match_info["tail"]
        self.requests.append((name, request.path_qs.split(f"/stub/svc/{name}", 1)[1]))
        spec = self.manifest.services[name]
        if spec.secret is None:
            return sidecar_error(502, "connect_failed", f"{spec.upstream} refused the connection.")
        if spec.secret not in self.secrets:
            return sidecar_error(424, "secret_not_configured", f"{spec.secret} is not set.")
        if path == "/api/v1/quote":
            return web.json_response(fake_quote(request.query["symbol"]))
        if path == "/fred/series/observations":
            return web.json_response(fake_observations())
        if path == "/fred/series":
            return web.json_response({"seriess": [{"id": request.query["series_id"], "title": "Unemployment Rate",
                                                   "units": "Percent"}]})
        if path.endswith("/chat/completions"):
            return await stream_chat(request, None)
        return web.json_response({"error": "not found"}, status=404)

    async def feed(self, request: web.Request) -> web.Response:
        source = STUB_FEEDS.get(request.query["url"])
        if source is None:
            return sidecar_error(502, "dns_failed", "The feed host name does not resolve.")
        return web.Response(body=(DATA / source).read_bytes(), content_type="application/xml")


@dataclass
class Site:
    base: str
    host: StubHost


async def serve(host: StubHost, pages: Path) -> tuple[web.AppRunner, str]:
    @web.middleware
    async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def bridge(_: web.Request) -> web.Response:
        return web.Response(text=STUB_BRIDGE_JS, content_type="text/javascript")

    async def favicon(_: web.Request) -> web.Response:
        return web.Response(body=asset_file("favicon.svg", "browser").read_bytes(), content_type="image/svg+xml")

    app = web.Application(middlewares=[security_headers])
    app.router.add_get("/keyside/bridge.js", bridge)
    app.router.add_get("/keyside/favicon.svg", favicon)
    app.router.add_post("/stub/ipc", host.ipc)
    app.router.add_route("*", "/stub/svc/{service}/{tail:.*}", host.service)
    app.router.add_get("/stub/feed", host.feed)
    app.router.add_static("/", pages)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest_asyncio.fixture(loop_scope="module")
async def site() -> AsyncIterator[Site]:
    """Serve the monitor pages, the stub bridge and the stub host on an OS-assigned loopback port."""
    host = StubHost(manifest=load_manifest("monitor"),
                    ui_overrides={"feeds": ["https://feeds.test/business.rss", "https://feeds.test/tech.atom"]})
    runner, base = await serve(host, host.manifest.pages_dir)
    try:
        yield Site(base, host)
    finally:
        await runner.cleanup()


ALL_KEYS = {"FINNHUB_API_KEY": "good-finnhub", "FRED_API_KEY": "good-fred", "GROQ_API_KEY": "good-groq"}


@shared_loop
async def test_open_settings_without_window_command(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/index.html")
    quotes = await panel_state(page, "quotes", "missing")
    await quotes.get_by_role("button", name="Open settings").click()
    notice = page.locator('[data-role="notice"]')
    await notice.wait_for(state="visible")
    assert "settings window" in await notice.text_content()
    assert {"command": "open_window", "args": {"label": "settings"}} in site.host.commands


@shared_loop
async def test_open_settings_link_in_terminal(site: Site, pages: Pages) -> None:
    site.host.open_window_result = {"label": "settings", "opened_in": "terminal"}
    try:
        page = await pages.open(f"{site.base}/index.html")
        await page.locator('[data-role="open-settings"]').click()
        notice = page.locator('[data-role="notice"]')
        await notice.wait_for(state="visible")
        assert await notice.text_content() == "Open the link keyside printed in the terminal to open Settings."
    finally:
        site.host.open_window_result = None


VAULT_TEXT_CASES = [
    pytest.param({"kind": "system", "display_name": "system keyring", "file_name": None},
                 "API keys stay in the system keyring.",
                 "Keys are saved in the system keyring and never shown again, not even masked.", id="system"),
    pytest.param({"kind": "file", "display_name": "encrypted file monitor.vault", "file_name": "monitor.vault"},
                 "API keys stay in the encrypted file monitor.vault.",
                 "Keys are saved in the encrypted file monitor.vault and never shown again, not even masked.",
                 id="file"),
    pytest.param({"kind": "memory", "display_name": "memory", "file_name": None},
                 "API keys are kept in memory only until keyside exits: saved keys are lost when you quit.",
                 "API keys are kept in memory only until keyside exits: saved keys are lost when you quit. "
                 "They are never shown again, not even masked.", id="memory"),
    pytest.param(None, "", "Saved keys are never shown again, not even masked.", id="unknown"),
]


@shared_loop
@pytest.mark.parametrize(("vault", "footer", "intro"), VAULT_TEXT_CASES)
async def test_pages_name_the_vault(site: Site, pages: Pages, vault: Any, footer: str, intro: str) -> None:
    site.host.vault = vault
    dashboard = await pages.open(f"{site.base}/index.html")
    await dashboard.wait_for_function(
        "(expected) => document.querySelector('[data-role=vault-note]').textContent === expected", arg=footer)
    assert "keyring" not in (await dashboard.locator(".app-footer").text_content()).replace(footer, "")

    settings = await pages.open(f"{site.base}/settings.html")
    await settings.locator("article.secret-card").first.wait_for()
    assert await settings.locator('[data-role="vault-note"]').text_content() == intro
    await assert_clean(dashboard)
    await assert_clean(settings)


@shared_loop
async def test_settings_memory_vault_save(site: Site, pages: Pages) -> None:
    site.host.vault = {"kind": "memory", "display_name": "memory", "file_name": None}
    page = await pages.open(f"{site.base}/settings.html")
    card = page.locator('article[data-secret="FRED_API_KEY"]')
    await card.wait_for()
    await card.locator("input").fill("memory-only-fred-key")
    message = await card_action(page, "FRED_API_KEY", "Save", "Saved")

    assert await message.text_content() == ("Saved for this session only: the key is lost when keyside exits. "
                                            "The dashboard uses it from now on.")
    assert site.host.secrets["FRED_API_KEY"] == "memory-only-fred-key"
    about = await page.locator('[data-role="runtime"]').text_content()
    assert "Vaultmemory" in about
    await page.screenshot(path=screenshot_path("monitor-settings-memory-vault.png"), full_page=True)
    await assert_clean(page)


@shared_loop
async def test_settings_shows_withheld_key(site: Site, pages: Pages) -> None:
    site.host.withheld["FRED_API_KEY"] = (["https://api.stlouisfed.org"], ["http://127.0.0.1:18080"])
    page = await pages.open(f"{site.base}/settings.html")
    card = page.locator('article[data-secret="FRED_API_KEY"]')
    await card.wait_for()

    assert await card.get_attribute("data-binding") == "mismatch"
    assert await card.locator(".badge").text_content() == "Withheld"
    text = await card.locator(".secret-validation").text_content()
    assert "saved for https://api.stlouisfed.org" in text
    assert "send it to http://127.0.0.1:18080" in text
    assert "keyside secrets bind FRED_API_KEY" in text
    assert await card.get_by_role("button", name="Delete").is_enabled()
    other = page.locator('article[data-secret="FINNHUB_API_KEY"]')
    assert await other.get_attribute("data-binding") == "ok"
    await assert_clean(page)


@shared_loop
async def test_headlines_all_feeds_offline(site: Site, pages: Pages) -> None:
    site.host.ui_overrides["feeds"] = ["https://feeds.test/gone.rss", "https://feeds.test/gone.atom"]
    page = await pages.open(f"{site.base}/index.html")
    headlines = await panel_state(page, "headlines", "unreachable")
    assert await headlines.locator(".status-text").text_content() == "No feed can be reached."
    assert await headlines.get_attribute("data-reason") == "dns_failed"
    brief = await panel_state(page, "brief", "empty")
    assert "once headlines have loaded" in await brief.locator(".status-text").text_content()


@shared_loop
async def test_hostile_xhtml_title_runs_nothing(site: Site, pages: Pages) -> None:
    site.host.ui_overrides["feeds"] = ["https://feeds.test/hostile.atom"]
    page = await pages.open(f"{site.base}/index.html")
    headlines = await panel_state(page, "headlines", "data")

    assert await headlines.locator(".headline-link").all_text_contents() == ["XHTML bold title"]
    assert await headlines.locator("img").count() == 0
    assert await page.evaluate("window.__feedPwned") is None
    # Parsing the XML makes Chromium report the handler to the CSP; the report is all it does.
    assert all(v.startswith("script-src-attr") for v in await page.evaluate("window.__cspViolations"))
    assert page.errors == []


@shared_loop
async def test_brief_falls_back_to_next_provider(site: Site, pages: Pages) -> None:
    site.host.secrets["OPENROUTER_API_KEY"] = "good-openrouter"
    page = await pages.open(f"{site.base}/index.html")
    await page.wait_for_selector('#panel-brief[data-stream="complete"]')
    source = await page.locator("#panel-brief .brief-source").text_content()
    assert "meta-llama/llama-3.1-8b-instruct" in source
    ai_calls = [(service, path) for service, path in site.host.requests if path.endswith("/chat/completions")]
    assert ai_calls == [("groq", "/openai/v1/chat/completions"), ("openrouter", "/api/v1/chat/completions")]


@shared_loop
async def test_quotes_stop_after_missing_key(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/index.html")
    await panel_state(page, "quotes", "missing")
    quote_requests = [path for service, path in site.host.requests if service == "finnhub"]
    assert quote_requests == ["/api/v1/quote?symbol=AAPL"], "a missing key costs one request, not one per symbol"


@shared_loop
async def test_quotes_unknown_symbol_row(site: Site, pages: Pages) -> None:
    site.host.secrets.update(ALL_KEYS)
    site.host.ui_overrides["watchlist"] = ["AAPL", "ZZZZ", "not a symbol!"]
    page = await pages.open(f"{site.base}/index.html")
    quotes = await panel_state(page, "quotes", "data")
    assert await quotes.locator("tr.quote").count() == 1
    assert await quotes.locator('tr[data-symbol="ZZZZ"]').text_content() == "ZZZZNo data for this symbol"
    assert "+1.25" in await quotes.locator('tr[data-symbol="AAPL"]').text_content()
    assert ("finnhub", "/api/v1/quote?symbol=not%20a%20symbol!") not in site.host.requests


@shared_loop
async def test_dashboard_narrow_layout(site: Site, pages: Pages) -> None:
    site.host.secrets.update(ALL_KEYS)
    page = await pages.open(f"{site.base}/index.html", width=420, height=900)
    await panel_state(page, "quotes", "data")
    await panel_state(page, "series", "data")
    overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    await page.screenshot(path=screenshot_path("monitor-dashboard-narrow.png"), full_page=True)
    await assert_clean(page)


@shared_loop
async def test_settings_rejects_empty_save(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/settings.html")
    card = page.locator('article[data-secret="FRED_API_KEY"]')
    await card.wait_for()
    await card.get_by_role("button", name="Save").click()
    assert "Paste a key" in await card.locator(".secret-message").text_content()
    await card.get_by_role("button", name="Validate").click()
    assert "Paste a key" in await card.locator(".secret-message").text_content()
    commands = {call["command"] for call in site.host.commands}
    assert "set_secret" not in commands
    assert "validate_secret" not in commands


# --- Module-level tests of the page logic, run in Chromium ----------------------------------

SSE_CASES = [
    pytest.param(["data: a\n\n"], ["a"], id="one-event"),
    pytest.param(["da", "ta: a\n", "\ndata: b\n\n"], ["a", "b"], id="split-field-and-blank-line"),
    pytest.param(["data: a\r", "\n\r\n"], ["a"], id="crlf-split-across-chunks"),
    pytest.param(["data: a\rdata: b\r\r"], ["a\nb"], id="cr-only-two-data-lines"),
    pytest.param([": keep-alive\n\ndata: x\n\n"], ["x"], id="comment-ignored"),
    pytest.param(["event: ping\ndata: p\n\n"], ["p"], id="named-event"),
    pytest.param(["data: tail-without-blank-line"], ["tail-without-blank-line"], id="flushed-at-end"),
    pytest.param(["data:no-space\n\n"], ["no-space"], id="no-space-after-colon"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_page(browser: Any) -> AsyncIterator[Any]:
    """One settings page shared by the tests below, which import page modules into it."""
    host = StubHost(manifest=load_manifest("monitor"))
    runner, base = await serve(host, host.manifest.pages_dir)
    try:
        page = await open_page(browser, f"{base}/settings.html")
        yield page
        await page.context.close()
    finally:
        await runner.cleanup()


@shared_loop
@pytest.mark.parametrize(("chunks", "expected"), SSE_CASES)
async def test_sse_parser(module_page: Any, chunks: list[str], expected: list[str]) -> None:
    events = await module_page.evaluate("""async (chunks) => {
      const { SseParser } = await import("/js/sse.js");
      const parser = new SseParser();
      const events = chunks.flatMap((chunk) => parser.push(chunk));
      return events.concat(parser.finish()).map((event) => event.data);
    }""", chunks)
    assert events == expected


CHAT_EVENT_CASES = [
    pytest.param("[DONE]", {"done": True}, id="done"),
    pytest.param('{"choices":[{"delta":{"content":"Hi"}}]}', {"text": "Hi"}, id="delta"),
    pytest.param('{"choices":[{"delta":{"role":"assistant"}}]}', {"text": ""}, id="role-only"),
    pytest.param('{"choices":[{"message":{"content":"Whole"}}]}', {"text": "Whole"}, id="non-streamed"),
    pytest.param('{"error":{"message":"model not found"}}', {"error": "model not found"}, id="api-error"),
    pytest.param("not json", {"text": ""}, id="garbage"),
]


@shared_loop
@pytest.mark.parametrize(("data", "expected"), CHAT_EVENT_CASES)
async def test_chat_event_reader(module_page: Any, data: str, expected: dict[str, Any]) -> None:
    result = await module_page.evaluate("""async (data) => {
      const { readChatEvent } = await import("/js/sse.js");
      return readChatEvent(data);
    }""", data)
    assert result == expected


FEED_CASES = [
    pytest.param("monitor_feed_rss.xml", "Loopback Business News",
                 ["Chip maker beats & raises forecast", "Central bank holds rates steady",
                  "Oil prices slip on supply data"],
                 ["https://news.example/chips", "https://news.example/rates", "https://news.example/oil"], id="rss2"),
    pytest.param("monitor_feed_atom.xml", "Loopback Tech Atom",
                 ["Compiler release speeds up builds", "Relative link entry"],
                 ["https://tech.example/compiler", "https://feeds.test/relative-post"], id="atom"),
    pytest.param("monitor_feed_rdf.xml", "Loopback RDF Digest",
                 ["RSS 1.0 item one", "RSS 1.0 item two"],
                 ["https://rdf.example/one", "https://rdf.example/two"], id="rss1-rdf"),
]


@shared_loop
@pytest.mark.parametrize(("data_file", "title", "titles", "links"), FEED_CASES)
async def test_feed_parser(module_page: Any, data_file: str, title: str, titles: list[str], links: list[str]) -> None:
    parsed = await module_page.evaluate("""async ([text, url]) => {
      const { parseFeed } = await import("/js/feeds.js");
      const feed = parseFeed(text, url);
      return { title: feed.title, titles: feed.items.map((i) => i.title), links: feed.items.map((i) => i.link),
               sources: [...new Set(feed.items.map((i) => i.source))] };
    }""", [(DATA / data_file).read_text(encoding="utf-8"), "https://feeds.test/feed"])
    assert parsed["title"] == title
    assert parsed["titles"] == titles
    assert parsed["links"] == links
    assert parsed["sources"] == [title]


@shared_loop
async def test_feed_parser_rejects_non_feed(module_page: Any) -> None:
    reasons = await module_page.evaluate("""async (texts) => {
      const { parseFeed } = await import("/js/feeds.js");
      return texts.map((text) => {
        try { parseFeed(text, "https://feeds.test/x"); return "parsed"; } catch (error) { return error.reason; }
      });
    }""", [(DATA / "monitor_feed_broken.txt").read_text(encoding="utf-8"), "<html><body>Not a feed</body></html>"])
    assert reasons == ["feed_invalid", "feed_invalid"]


CLASSIFY_CASES = [
    pytest.param(424, {"error": {"reason": "secret_not_configured", "message": "not set"}}, "missing",
                 "secret_not_configured", id="sidecar-missing-key"),
    pytest.param(502, {"error": {"reason": "upstream_unreachable", "message": "offline"}}, "unreachable",
                 "upstream_unreachable", id="sidecar-unreachable"),
    pytest.param(504, {"error": {"reason": "timeout_connect", "message": "slow"}}, "unreachable",
                 "timeout_connect", id="guard-timeout"),
    pytest.param(403, {"error": {"reason": "deny_private", "message": "private address"}}, "blocked",
                 "deny_private", id="guard-deny-private"),
    pytest.param(403, {"error": {"reason": "path_not_allowed", "message": "path"}}, "blocked",
                 "path_not_allowed", id="service-path"),
    pytest.param(401, {"error": {"reason": "token_invalid", "message": "bad token"}}, "sidecar",
                 "token_invalid", id="sidecar-token"),
    pytest.param(401, {"error": "Invalid API key."}, "invalid", "upstream_status", id="finnhub-401"),
    pytest.param(403, {"message": "Forbidden"}, "invalid", "upstream_status", id="upstream-403"),
    pytest.param(400, {"error_code": 400,
                       "error_message": "Bad Request. The value for variable api_key is not registered."},
                 "invalid", "upstream_status", id="fred-bad-key"),
    pytest.param(400, {"error_message": "Bad Request. Variable series_id is not set."}, "error",
                 "upstream_status", id="fred-bad-request"),
    pytest.param(429, {"error": "API limit reached."}, "rate_limited", "upstream_status", id="upstream-429"),
    pytest.param(500, "plain text failure", "error", "upstream_status", id="upstream-500-text"),
]


@shared_loop
@pytest.mark.parametrize(("status", "body", "state", "reason"), CLASSIFY_CASES)
async def test_classify_response(module_page: Any, status: int, body: Any, state: str, reason: str) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    result = await module_page.evaluate("""async ([status, text]) => {
      const { classifyResponse } = await import("/js/failure.js");
      const failure = await classifyResponse(new Response(text, { status }));
      return { state: failure.state, reason: failure.reason, status: failure.status };
    }""", [status, text])
    assert result == {"state": state, "reason": reason, "status": status}


@shared_loop
async def test_classify_bridge_errors(module_page: Any) -> None:
    result = await module_page.evaluate("""async () => {
      const { classifyError } = await import("/js/failure.js");
      return [
        classifyError(Object.assign(new Error("not set"), { reason: "secret_not_configured" })).state,
        classifyError(Object.assign(new Error("moved"), { reason: "sidecar_moved" })).state,
        classifyError(Object.assign(new Error("401"), { reason: "upstream_status", status: 401 })).state,
        classifyError(new TypeError("Failed to fetch")).reason,
        classifyError(Object.assign(new Error("?"), { reason: "something_new" })).state,
      ];
    }""")
    assert result == ["missing", "sidecar", "invalid", "sidecar_unreachable", "error"]


@shared_loop
async def test_app_config_with_service_names_only(module_page: Any) -> None:
    result = await module_page.evaluate("""async () => {
      const { readAppConfig, aiProviders } = await import("/js/app-config.js");
      const config = readAppConfig({ app: { name: "M" }, services: ["groq", "ollama"], windows: ["main"],
        ui: { ai_providers: ["groq", "ollama", "nope"], ai: { groq: { path: "/v1/chat/completions", model: "m" },
              ollama: { path: "/v1/chat/completions", model: "l", label: "Ollama" } } } });
      const problems = [];
      const providers = aiProviders(config.ui, config.services, problems);
      return { names: providers.map((p) => p.service), labels: providers.map((p) => p.label), problems };
    }""")
    assert result["names"] == ["groq", "ollama"]
    assert result["labels"] == ["groq", "Ollama"]
    assert result["problems"] == ["[ui.ai.nope] needs path and model"]


AXIS_CASES = [
    pytest.param("2015-01-01", 120, ["2016", "2018", "2020", "2022", "2024"], id="ten-years-by-year"),
    pytest.param("2024-01-01", 5, ["Jan 2024", "Feb 2024", "Mar 2024", "Apr 2024", "May 2024"], id="months"),
]


@shared_loop
@pytest.mark.parametrize(("start", "months", "labels"), AXIS_CASES)
async def test_chart_time_axis(module_page: Any, start: str, months: int, labels: list[str]) -> None:
    result = await module_page.evaluate("""async ([start, months]) => {
      const { lineChart } = await import("/js/chart.js");
      const first = new Date(`${start}T00:00:00Z`);
      const points = Array.from({ length: months }, (_, i) => ({
        date: new Date(Date.UTC(first.getUTCFullYear(), first.getUTCMonth() + i, 1)), value: i % 3 }));
      const svg = lineChart(points, { label: "test" });
      return [...svg.querySelectorAll(".chart-axis text")].map((node) => node.textContent);
    }""", [start, months])
    assert result == labels


@shared_loop
async def test_chart_nice_steps(module_page: Any) -> None:
    steps = await module_page.evaluate("""async () => {
      const { niceStep } = await import("/js/chart.js");
      return [niceStep(4, 4), niceStep(7.3, 4), niceStep(0.37, 4), niceStep(260, 4), niceStep(0, 4)];
    }""")
    assert steps == [1, 2, 0.1, 100, 1]

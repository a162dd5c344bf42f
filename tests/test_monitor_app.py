"""Tests for the bundled monitor app and the hello example.

Three layers: the manifests load and bind each key to the right upstream and injection;
the pages obey the Content-Security-Policy the page server sends (same-origin files only,
no inline script, style or event handlers, no HTML sinks or browser storage in the JS);
and the pages behave in Chromium. The browser tests serve the pages from loopback with that
CSP and a stub bridge module whose host commands and sidecar routes are answered by this
test's own aiohttp server, so each panel state (data, missing key, rejected key, offline)
can be produced on demand without the real shell.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
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
from keyside.manifest import Manifest, bundled_app_dir, load_manifest

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
# The policy the page server sends with every page (connect-src names only 'self' here
# because this test's stub answers the sidecar routes on the page origin).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Playwright waits this long for a page state before failing the test, in milliseconds.
PAGE_TIMEOUT_MS = 10_000

# The browser tests share one event loop, so they can share one Chromium (a launch takes
# seconds on a busy 2-core machine); each test still gets its own browser context.
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


# --- Browser tests: a stub host and sidecar on loopback -------------------------------------

# The bridge module the pages import, for these tests only: invoke() posts to the stub host
# and api.fetch()/api.feed() call the stub sidecar routes, keeping the real bridge's contract
# (Responses from the sidecar; KeysideError with .reason for host errors).
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
const listeners = [];
export function onSidecarState(callback) { listeners.push(callback); }
"""

# Collects CSP violations in the page, so a test can assert the pages trigger none.
CSP_LISTENER_JS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (event) => window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`));
"""

FEED_URLS = {
    "rss": "https://feeds.test/business.rss",
    "atom": "https://feeds.test/tech.atom",
    "rdf": "https://feeds.test/digest.rdf",
}
BRIEF_TOKENS = ["- Rates", " held", " steady", " while", " chip", " makers", " rallied."]
# Released to the page before the stream waits for the test (see StubHost.stream_gate).
BRIEF_TOKENS_BEFORE_GATE = 3


def sidecar_error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


@dataclass
class StubHost:
    """The host commands and sidecar routes the pages call, with switchable behaviour.

    `behaviour[service]` is "data", "invalid" (the upstream answers 401), "unreachable"
    (the sidecar reports upstream_unreachable) or "rate_limited" (429 from the upstream).
    A keyed service whose secret is not in `secrets` answers like the sidecar:
    424 secret_not_configured.
    """

    manifest: Manifest
    secrets: dict[str, str] = field(default_factory=dict)
    behaviour: dict[str, str] = field(default_factory=dict)
    feeds: dict[str, str] = field(default_factory=dict)  # url -> data file name, or "unreachable"
    ui_overrides: dict[str, Any] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (service, path with query)
    commands: list[dict[str, Any]] = field(default_factory=list)
    stream_gate: asyncio.Event | None = None
    last_validation: dict[str, dict[str, Any]] = field(default_factory=dict)

    # Host commands.

    def app_config(self) -> dict[str, Any]:
        ui = {**self.manifest.ui, **self.ui_overrides}
        return {
            "app": {"id": self.manifest.app_id, "name": self.manifest.name},
            "ui": ui,
            "services": [{"name": name, "secret": spec.secret} for name, spec in self.manifest.services.items()],
            "windows": [{"label": label, "page": spec.page, "title": spec.title}
                        for label, spec in self.manifest.windows.items()],
        }

    def run_command(self, command: str, args: dict[str, Any]) -> Any:
        self.commands.append({"command": command, "args": args})
        if command == "app_config":
            return self.app_config()
        if command == "runtime_info":
            return {"os": "Linux", "python": "3.11", "keyside": "0.1.0", "sidecar": {"state": "ready", "reason": None}}
        if command == "list_secrets":
            return [{"name": name, "description": spec.description, "configured": name in self.secrets,
                     "last_validation": self.last_validation.get(name)}
                    for name, spec in self.manifest.secrets.items()]
        if command == "set_secret":
            self.secrets[args["name"]] = args["value"]
            return None
        if command == "delete_secret":
            return self.secrets.pop(args["name"], None) is not None
        if command == "validate_secret":
            value = args.get("value", self.secrets.get(args["name"]))
            result = {"result": "valid" if value and value.startswith("good-") else "invalid",
                      "reason": "accepted" if value and value.startswith("good-") else "upstream_status"}
            self.last_validation[args["name"]] = {**result, "at": "2025-06-03T12:00:00Z"}
            return result
        if command == "open_external":
            self.opened.append(args["url"])
            return None
        raise LookupError(command)

    async def ipc(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            result = self.run_command(body["command"], body.get("args", {}))
        except LookupError:
            return web.json_response({"ok": False, "error": {"reason": "unknown_command",
                                                             "message": f"Unknown command {body['command']!r}."}})
        return web.json_response({"ok": True, "result": result})

    # Sidecar routes.

    async def service(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["service"]
        path = "/" + request.match_info["tail"]
        self.requests.append((name, request.path_qs.split(f"/stub/svc/{name}", 1)[1]))
        spec = self.manifest.services.get(name)
        if spec is None:
            return sidecar_error(404, "unknown_service", f"No service named {name!r}.")
        if spec.secret and spec.secret not in self.secrets:
            return sidecar_error(424, "secret_not_configured", f"{spec.secret} is not set.")
        behaviour = self.behaviour.get(name, "unreachable" if spec.secret is None else "data")
        if behaviour == "unreachable":
            return sidecar_error(502, "upstream_unreachable", f"{spec.upstream} cannot be reached.")
        if behaviour == "invalid":
            return web.json_response({"error": "Invalid API key."}, status=401)
        if behaviour == "rate_limited":
            return web.json_response({"error": "API limit reached."}, status=429)
        return await self.service_data(request, name, path)

    async def service_data(self, request: web.Request, name: str, path: str) -> web.StreamResponse:
        if name == "finnhub" and path == "/api/v1/quote":
            return web.json_response(fake_quote(request.query["symbol"]))
        if name == "fred" and path == "/fred/series/observations":
            return web.json_response(fake_observations())
        if name == "fred" and path == "/fred/series":
            return web.json_response({"seriess": [{"id": request.query["series_id"], "title": "Unemployment Rate",
                                                   "units": "Percent"}]})
        if path.endswith("/chat/completions") and request.method == "POST":
            return await self.chat_stream(request)
        if name == "github" and path == "/user":
            return web.json_response({"login": "octocat", "name": "The Octocat"})
        return web.json_response({"error": "not found"}, status=404)

    async def chat_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["stream"] is True
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index, token in enumerate(BRIEF_TOKENS):
            if index == BRIEF_TOKENS_BEFORE_GATE and self.stream_gate is not None:
                await self.stream_gate.wait()
            chunk = {"choices": [{"index": 0, "delta": {"content": token}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def feed(self, request: web.Request) -> web.Response:
        source = self.feeds.get(request.query["url"], "unreachable")
        if source == "unreachable":
            return sidecar_error(502, "dns_failed", "The feed host name does not resolve.")
        return web.Response(body=(DATA / source).read_bytes(), content_type="application/xml")


def fake_quote(symbol: str) -> dict[str, Any]:
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


@dataclass
class Site:
    base: str
    host: StubHost


@pytest_asyncio.fixture(loop_scope="module")
async def site() -> AsyncIterator[Site]:
    """Serve the monitor pages, the stub bridge and the stub host on an OS-assigned loopback port."""
    host = StubHost(manifest=load_manifest("monitor"),
                    feeds={FEED_URLS["rss"]: "monitor_feed_rss.xml", FEED_URLS["atom"]: "monitor_feed_atom.xml"},
                    ui_overrides={"feeds": [FEED_URLS["rss"], FEED_URLS["atom"]]})
    runner, base = await serve(host, host.manifest.pages_dir)
    try:
        yield Site(base, host)
    finally:
        await runner.cleanup()


async def serve(host: StubHost, pages: Path) -> tuple[web.AppRunner, str]:
    @web.middleware
    async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def bridge(_: web.Request) -> web.Response:
        return web.Response(text=STUB_BRIDGE_JS, content_type="text/javascript")

    app = web.Application(middlewares=[security_headers])
    app.router.add_get("/keyside/bridge.js", bridge)
    app.router.add_post("/stub/ipc", host.ipc)
    app.router.add_route("*", "/stub/svc/{service}/{tail:.*}", host.service)
    app.router.add_get("/stub/feed", host.feed)
    app.router.add_static("/", pages)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


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
    context = await browser.new_context(viewport={"width": width, "height": height})
    await context.add_init_script(CSP_LISTENER_JS)
    page = await context.new_page()
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


async def wait_for_opened(host: StubHost) -> None:
    """Wait until the page has called open_external (the click handler sends it asynchronously)."""
    for _ in range(100):
        if host.opened:
            return
        await asyncio.sleep(0.05)


def screenshot_path(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)


ALL_KEYS = {"FINNHUB_API_KEY": "good-finnhub", "FRED_API_KEY": "good-fred", "GROQ_API_KEY": "good-groq"}


@shared_loop
async def test_dashboard_shows_every_panel(site: Site, pages: Pages) -> None:
    site.host.secrets.update(ALL_KEYS)
    site.host.ui_overrides["watchlist"] = ["AAPL", "MSFT", "ZZZZ"]
    page = await pages.open(f"{site.base}/index.html")

    headlines = await panel_state(page, "headlines", "data")
    assert await headlines.locator(".headline").count() == 5
    first = await headlines.locator(".headline-link").first.text_content()
    assert first == "Compiler release speeds up builds"

    quotes = await panel_state(page, "quotes", "data")
    assert await quotes.locator("tr.quote").count() == 2
    assert await quotes.locator('tr[data-symbol="ZZZZ"]').text_content() == "ZZZZNo data for this symbol"
    assert "+1.25" in await quotes.locator('tr[data-symbol="AAPL"]').text_content()

    series = await panel_state(page, "series", "data")
    assert await series.locator("svg.chart path.chart-line").count() == 1
    assert "Unemployment Rate" in await series.locator("svg.chart").get_attribute("aria-label")
    assert await series.locator(".series-value").text_content() == "3.9"

    brief = await panel_state(page, "brief", "data")
    await page.wait_for_selector('#panel-brief[data-stream="complete"]')
    assert await brief.locator(".brief-text").text_content() == "".join(BRIEF_TOKENS)
    assert "llama-3.1-8b-instant" in await brief.locator(".brief-source").text_content()

    assert await page.locator(".sidecar-state").get_attribute("data-state") == "ready"
    await page.screenshot(path=screenshot_path("monitor-dashboard.png"), full_page=True)
    await assert_clean(page)


@shared_loop
async def test_dashboard_requests_stay_in_services(site: Site, pages: Pages) -> None:
    site.host.secrets.update(ALL_KEYS)
    page = await pages.open(f"{site.base}/index.html")
    await page.wait_for_selector('#panel-brief[data-stream="complete"]')
    await panel_state(page, "series", "data")
    await panel_state(page, "quotes", "data")

    prefixes = {name: spec.paths for name, spec in site.host.manifest.services.items()}
    for service, path in site.host.requests:
        assert any(path.startswith(prefix) for prefix in prefixes[service]), (service, path)
    assert ("groq", "/openai/v1/chat/completions") in site.host.requests
    quote_paths = [path for service, path in site.host.requests if service == "finnhub"]
    assert quote_paths[0] == "/api/v1/quote?symbol=AAPL"
    assert all("token" not in path and "api_key" not in path for _, path in site.host.requests)


@shared_loop
async def test_dashboard_without_keys(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/index.html")

    await panel_state(page, "headlines", "data")
    for panel, secret in (("quotes", "FINNHUB_API_KEY"), ("series", "FRED_API_KEY")):
        locator = await panel_state(page, panel, "missing")
        assert secret in await locator.locator(".status-hint").text_content()
        assert await locator.get_attribute("data-reason") == "secret_not_configured"
        assert await locator.get_by_role("button", name="Open settings").count() == 1

    brief = await panel_state(page, "brief", "missing")
    hint = await brief.locator(".status-hint").text_content()
    assert "GROQ_API_KEY" in hint
    assert "OPENROUTER_API_KEY" in hint
    assert "Ollama: cannot be reached" in hint
    await page.screenshot(path=screenshot_path("monitor-dashboard-no-keys.png"), full_page=True)
    await assert_clean(page)


@shared_loop
async def test_dashboard_recovers_after_key_saved(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/index.html")
    await panel_state(page, "quotes", "missing")

    site.host.secrets["FINNHUB_API_KEY"] = "good-finnhub"
    # Returning to the dashboard window retries failing panels at once.
    await page.evaluate("window.dispatchEvent(new Event('focus'))")
    quotes = await panel_state(page, "quotes", "data")
    assert await quotes.locator("tr.quote").count() == len(site.host.manifest.ui["watchlist"])


@shared_loop
async def test_open_settings_without_window_command(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/index.html")
    quotes = await panel_state(page, "quotes", "missing")
    await quotes.get_by_role("button", name="Open settings").click()
    notice = page.locator('[data-role="notice"]')
    await notice.wait_for(state="visible")
    assert "settings window" in await notice.text_content()
    assert {"command": "open_window", "args": {"label": "settings"}} in site.host.commands


FAILURE_CASES = [
    pytest.param("invalid", "invalid", "rejected the key (HTTP 401)", id="upstream-401"),
    pytest.param("unreachable", "unreachable", "cannot be reached", id="offline"),
    pytest.param("rate_limited", "rate_limited", "rate limit reached", id="upstream-429"),
]


@shared_loop
@pytest.mark.parametrize(("behaviour", "state", "text"), FAILURE_CASES)
async def test_dashboard_panel_failures(site: Site, pages: Pages, behaviour: str, state: str, text: str) -> None:
    site.host.secrets.update(ALL_KEYS)
    site.host.behaviour.update({"finnhub": behaviour, "fred": behaviour, "groq": behaviour})
    page = await pages.open(f"{site.base}/index.html")

    for panel in ("quotes", "series", "brief"):
        locator = await panel_state(page, panel, state)
        assert await locator.locator(".panel-body").is_hidden()
        if panel == "brief" and state == "unreachable":
            # Offline, the brief moves on to the next providers and sums up all of them.
            assert "Groq: cannot be reached." in await locator.locator(".status-hint").text_content()
            continue
        assert text in await locator.locator(".status-text").text_content()
    quote_requests = [path for service, path in site.host.requests if service == "finnhub"]
    assert quote_requests == ["/api/v1/quote?symbol=AAPL"], "a failing key costs one request, not one per symbol"
    await assert_clean(page)


@shared_loop
async def test_headlines_offline(site: Site, pages: Pages) -> None:
    site.host.feeds.clear()
    page = await pages.open(f"{site.base}/index.html")
    headlines = await panel_state(page, "headlines", "unreachable")
    assert await headlines.locator(".status-text").text_content() == "No feed can be reached."
    assert await headlines.get_attribute("data-reason") == "dns_failed"


@shared_loop
async def test_headlines_partial_failure(site: Site, pages: Pages) -> None:
    site.host.ui_overrides["feeds"] = [FEED_URLS["rss"], "https://feeds.test/missing.xml"]
    page = await pages.open(f"{site.base}/index.html")
    headlines = await panel_state(page, "headlines", "data")
    assert await headlines.locator(".headline").count() == 3
    assert "feeds.test (dns_failed)" in await headlines.locator(".panel-note").text_content()


@shared_loop
async def test_headline_link_opens_externally(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/index.html")
    headlines = await panel_state(page, "headlines", "data")
    await headlines.get_by_role("link", name="Central bank holds rates steady").click()
    await wait_for_opened(site.host)
    assert site.host.opened == ["https://news.example/rates"]
    assert page.url == f"{site.base}/index.html"


@shared_loop
async def test_hostile_feed_renders_as_text(site: Site, pages: Pages) -> None:
    hostile = "https://feeds.test/hostile.rss"
    site.host.feeds[hostile] = "monitor_feed_hostile.xml"
    site.host.ui_overrides["feeds"] = [hostile]
    page = await pages.open(f"{site.base}/index.html")
    headlines = await panel_state(page, "headlines", "data")

    titles = await headlines.locator(".headline-link").all_text_contents()
    assert titles == ["Image title", "Script title", "Anchor title", "SVG title", "Frame title"]
    hrefs = await headlines.locator("a").evaluate_all("links => links.map((a) => a.getAttribute('href'))")
    assert hrefs == ["https://safe.example/ok"]
    for tag in ("img", "script", "svg", "iframe"):
        assert await headlines.locator(tag).count() == 0, tag
    assert await page.evaluate("window.__feedPwned") is None
    await assert_clean(page)


@shared_loop
async def test_hostile_xhtml_title_runs_nothing(site: Site, pages: Pages) -> None:
    hostile = "https://feeds.test/hostile.atom"
    site.host.feeds[hostile] = "monitor_feed_hostile_xhtml.xml"
    site.host.ui_overrides["feeds"] = [hostile]
    page = await pages.open(f"{site.base}/index.html")
    headlines = await panel_state(page, "headlines", "data")

    assert await headlines.locator(".headline-link").all_text_contents() == ["XHTML bold title"]
    assert await headlines.locator("img").count() == 0
    assert await page.evaluate("window.__feedPwned") is None
    # Parsing the XML makes Chromium report the handler to the CSP; the report is all it does.
    assert all(v.startswith("script-src-attr") for v in await page.evaluate("window.__cspViolations"))
    assert page.errors == []


@shared_loop
async def test_brief_streams_token_by_token(site: Site, pages: Pages) -> None:
    site.host.secrets.update(ALL_KEYS)
    site.host.stream_gate = asyncio.Event()
    page = await pages.open(f"{site.base}/index.html")

    partial = "".join(BRIEF_TOKENS[:BRIEF_TOKENS_BEFORE_GATE])
    await page.wait_for_function(
        "(text) => document.querySelector('#panel-brief .brief-text')?.textContent === text", arg=partial)
    assert await page.locator("#panel-brief").get_attribute("data-stream") == "streaming"
    assert await page.locator('#panel-brief [data-role="stop"]').is_visible()

    site.host.stream_gate.set()
    await page.wait_for_selector('#panel-brief[data-stream="complete"]')
    assert await page.locator("#panel-brief .brief-text").text_content() == "".join(BRIEF_TOKENS)
    assert await page.locator('#panel-brief [data-role="stop"]').is_hidden()


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
async def test_dashboard_narrow_layout(site: Site, pages: Pages) -> None:
    site.host.secrets.update(ALL_KEYS)
    page = await pages.open(f"{site.base}/index.html", width=420, height=900)
    await panel_state(page, "quotes", "data")
    await panel_state(page, "series", "data")
    overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    await page.screenshot(path=screenshot_path("monitor-dashboard-narrow.png"), full_page=True)


SECRET_VALUE = "good-settings-test-9f3b2c7d41e8a6"


@shared_loop
async def test_settings_save_validate_delete(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/settings.html", width=800, height=1000)
    card = page.locator('article[data-secret="FINNHUB_API_KEY"]')
    await card.wait_for()
    assert await page.locator("article.secret-card").count() == len(site.host.manifest.secrets)
    assert await card.get_attribute("data-configured") == "false"
    field_ = card.get_by_label("New value")
    assert await field_.get_attribute("type") == "password"
    assert await field_.input_value() == ""

    await field_.fill(SECRET_VALUE)
    await card.get_by_role("button", name="Validate").click()
    message = card.locator(".secret-message")
    await page.wait_for_function(
        "(node) => node.textContent.includes('Valid')", arg=await message.element_handle())
    assert "New value. Valid" in await message.text_content()

    await card.get_by_role("button", name="Save").click()
    await page.wait_for_selector('article[data-secret="FINNHUB_API_KEY"][data-configured="true"]')
    assert site.host.secrets["FINNHUB_API_KEY"] == SECRET_VALUE
    assert await field_.input_value() == ""
    assert await card.locator(".badge").text_content() == "Set"
    assert "Last check: valid" in await card.locator(".secret-validation").text_content()

    # The saved value is nowhere in the page: DOM, field values, storage.
    assert SECRET_VALUE not in await page.content()
    values = await page.locator("input").evaluate_all("inputs => inputs.map((i) => i.value)")
    assert SECRET_VALUE not in values
    assert await page.evaluate("localStorage.length + sessionStorage.length") == 0
    await page.screenshot(path=screenshot_path("monitor-settings.png"), full_page=True)

    # Validate with an empty field checks the saved key.
    await card.get_by_role("button", name="Validate").click()
    await page.wait_for_function(
        "(node) => node.textContent.startsWith('Saved key.')", arg=await message.element_handle())
    assert site.host.commands[-2] == {"command": "validate_secret", "args": {"name": "FINNHUB_API_KEY"}}

    delete = card.get_by_role("button", name="Delete")
    await delete.click()
    assert "FINNHUB_API_KEY" in site.host.secrets, "the first press only arms the button"
    await card.get_by_role("button", name="Confirm delete").click()
    await page.wait_for_selector('article[data-secret="FINNHUB_API_KEY"][data-configured="false"]')
    assert "FINNHUB_API_KEY" not in site.host.secrets
    await assert_clean(page)


@shared_loop
async def test_settings_rejects_empty_save(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/settings.html")
    card = page.locator('article[data-secret="FRED_API_KEY"]')
    await card.wait_for()
    await card.get_by_role("button", name="Save").click()
    assert "Paste a key" in await card.locator(".secret-message").text_content()
    assert not any(call["command"] == "set_secret" for call in site.host.commands)


@shared_loop
async def test_settings_reports_invalid_candidate(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/settings.html")
    card = page.locator('article[data-secret="GROQ_API_KEY"]')
    await card.wait_for()
    await card.get_by_label("New value").fill("bad-key")
    await card.get_by_role("button", name="Validate").click()
    message = card.locator('.secret-message[data-kind="error"]')
    await message.wait_for()
    assert "Invalid" in await message.text_content()
    assert "GROQ_API_KEY" not in site.host.secrets


@shared_loop
async def test_settings_key_page_opens_externally(site: Site, pages: Pages) -> None:
    page = await pages.open(f"{site.base}/settings.html")
    card = page.locator('article[data-secret="FRED_API_KEY"]')
    await card.get_by_role("link", name="Get a key").click()
    await wait_for_opened(site.host)
    assert site.host.opened == [site.host.manifest.ui["key_pages"]["FRED_API_KEY"]]


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
        classifyError(Object.assign(new Error("down"), { reason: "sidecar_unavailable" })).state,
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


@shared_loop
async def test_chart_nice_steps(module_page: Any) -> None:
    steps = await module_page.evaluate("""async () => {
      const { niceStep } = await import("/js/chart.js");
      return [niceStep(4, 4), niceStep(7.3, 4), niceStep(0.37, 4), niceStep(260, 4), niceStep(0, 4)];
    }""")
    assert steps == [1, 2, 0.1, 100, 1]


# --- The hello example in Chromium ----------------------------------------------------------


@shared_loop
async def test_hello_saves_token_and_greets(pages: Pages) -> None:
    host = StubHost(manifest=load_manifest(HELLO_DIR))
    runner, base = await serve(host, host.manifest.pages_dir)
    try:
        page = await pages.open(f"{base}/index.html", width=600, height=500)
        await page.wait_for_function("() => document.getElementById('token-state').textContent.includes('not set')")

        await page.get_by_role("button", name="Say hello").click()
        await page.wait_for_function(
            "() => document.getElementById('greeting').textContent.includes('secret_not_configured')")

        await page.get_by_label("GitHub token").fill("good-github-token")
        await page.get_by_role("button", name="Save token").click()
        await page.wait_for_function(
            "() => document.getElementById('token-state').textContent === 'GITHUB_TOKEN is set.'")
        assert await page.get_by_label("GitHub token").input_value() == ""
        assert host.secrets == {"GITHUB_TOKEN": "good-github-token"}

        await page.get_by_role("button", name="Say hello").click()
        await page.wait_for_function(
            "() => document.getElementById('greeting').textContent === 'Hello, The Octocat!'")
        assert host.requests == [("github", "/user"), ("github", "/user")]
        assert "good-github-token" not in await page.content()
        await assert_clean(page)
    finally:
        await runner.cleanup()


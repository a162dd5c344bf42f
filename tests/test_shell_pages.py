"""The page server: one loopback origin per window, strict headers, no file outside the pages folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import rawhttp
from keyside.manifest import load_manifest
from keyside.shell.pages import (
    CONTENT_TYPES,
    PageServer,
    asset_file,
    content_security_policy,
    origin_of,
    resolve_page_file,
)

CASES = json.loads((Path(__file__).parent / "data" / "shell_paths.json").read_text())
CANARY = "CANARY-OUTSIDE-THE-PAGES-FOLDER"
SIDECAR_ORIGIN = "http://127.0.0.1:45678"

MANIFEST = """
[app]
id = "pages-test"
name = "Pages test"

[windows.main]
page = "index.html"
capabilities = ["data"]

[windows.settings]
page = "settings.html"
capabilities = ["data", "secrets"]
"""


def make_app(root: Path) -> Path:
    """Write an app folder with pages, plus files next to it that must never be served."""
    app = root / "app"
    pages = app / "pages"
    (pages / "js").mkdir(parents=True)
    (pages / "css").mkdir()
    (app / "keyside.toml").write_text(MANIFEST)
    (pages / "index.html").write_text("<!doctype html><title>index</title>")
    (pages / "settings.html").write_text("<!doctype html><title>settings</title>")
    (pages / "js" / "app.js").write_text("export const x = 1;")
    (pages / "css" / "app.css").write_text("body { margin: 0 }")
    (pages / ".hidden").write_text(CANARY)
    (pages / "js" / ".env").write_text(CANARY)
    (pages / "secret.py").write_text(CANARY)
    (pages / "settings.toml").write_text(CANARY)
    (app / "canary.txt").write_text(CANARY)
    (root / "canary.txt").write_text(CANARY)
    os.symlink(app / "canary.txt", pages / "link-out.txt")
    return app


@pytest.fixture
def sidecar() -> dict[str, str | None]:
    return {"origin": SIDECAR_ORIGIN}


@pytest.fixture
def server(tmp_path: Path, sidecar: dict[str, str | None]) -> Iterator[PageServer]:
    manifest = load_manifest(make_app(tmp_path))
    pages = PageServer(manifest, mode="desktop", sidecar_origin=lambda: sidecar["origin"])
    pages.start()
    try:
        yield pages
    finally:
        pages.stop()


def main_port(server: PageServer) -> int:
    return server.site("main").port


@pytest.mark.parametrize("case", CASES["served"], ids=[c["id"] for c in CASES["served"]])
def test_served_targets(server: PageServer, case: dict) -> None:
    response = rawhttp.request(main_port(server), "GET", case["target"])

    assert response.status == case["status"]
    if "content_type" in case:
        assert response.header("Content-Type") == case["content_type"]
    if "location" in case:
        assert response.header("Location") == case["location"]


@pytest.mark.parametrize("case", CASES["rejected"], ids=[c["id"] for c in CASES["rejected"]])
def test_rejected_targets(server: PageServer, case: dict) -> None:
    response = rawhttp.request(main_port(server), "GET", case["target"])

    assert response.status in (400, 404)
    assert CANARY.encode() not in response.body
    assert response.header("Content-Security-Policy") is not None or response.status == 400


@pytest.mark.parametrize("case", CASES["bad_hosts"], ids=[c["id"] for c in CASES["bad_hosts"]])
def test_wrong_host_rejected(server: PageServer, case: dict) -> None:
    port = main_port(server)
    host = None if case["host"] is None else case["host"].format(port=port)

    response = rawhttp.request(port, "GET", "/index.html", host=host)

    assert response.status in (400, 421)
    assert b"<title>index</title>" not in response.body
    if response.status == 421:
        assert json.loads(response.body)["error"]["reason"] == "host_not_allowed"


def test_favicon_ico_answers_no_content(server: PageServer) -> None:
    response = rawhttp.request(main_port(server), "GET", "/favicon.ico")

    assert response.status == 204
    assert response.body == b""
    assert response.header("Content-Security-Policy") is not None


def test_app_favicon_ico_is_served(server: PageServer) -> None:
    icon = b"\x00\x00\x01\x00 app icon"
    (server.manifest.pages_dir / "favicon.ico").write_bytes(icon)

    response = rawhttp.request(main_port(server), "GET", "/favicon.ico")

    assert response.status == 200
    assert response.body == icon
    assert response.header("Content-Type") == "image/x-icon"


def test_keyside_favicon_svg_served(server: PageServer) -> None:
    response = rawhttp.request(main_port(server), "GET", "/keyside/favicon.svg")

    assert response.status == 200
    assert response.header("Content-Type") == "image/svg+xml"
    assert response.body.startswith(b"<svg ")


def test_headers_on_every_response(server: PageServer) -> None:
    port = main_port(server)
    responses = {
        "page": rawhttp.request(port, "GET", "/index.html"),
        "asset": rawhttp.request(port, "GET", "/keyside/bridge.js"),
        "not-found": rawhttp.request(port, "GET", "/nope.html"),
        "wrong-host": rawhttp.request(port, "GET", "/index.html", host="evil.example"),
        "wrong-method": rawhttp.request(port, "POST", "/index.html", body=b"x"),
    }
    expected = {
        "Content-Security-Policy": content_security_policy(SIDECAR_ORIGIN),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Frame-Options": "DENY",
    }
    for kind, response in responses.items():
        for name, value in expected.items():
            assert response.header(name) == value, f"{kind}: {name}"


def test_csp_exact_policy() -> None:
    assert content_security_policy("http://127.0.0.1:4000") == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' http://127.0.0.1:4000; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    assert "connect-src 'self';" in content_security_policy(None)


def test_csp_follows_sidecar_restart(server: PageServer, sidecar: dict[str, str | None]) -> None:
    port = main_port(server)
    before = rawhttp.request(port, "GET", "/index.html").header("Content-Security-Policy")

    sidecar["origin"] = "http://127.0.0.1:45999"
    after = rawhttp.request(port, "GET", "/index.html").header("Content-Security-Policy")

    assert "connect-src 'self' http://127.0.0.1:45678;" in before
    assert "connect-src 'self' http://127.0.0.1:45999;" in after


def test_each_window_own_origin(server: PageServer) -> None:
    main, settings = server.site("main"), server.site("settings")

    assert main.port != settings.port
    assert main.origin == f"http://127.0.0.1:{main.port}"
    assert settings.page_url == f"http://127.0.0.1:{settings.port}/settings.html"
    assert rawhttp.request(settings.port, "GET", "/").header("Location") == "/settings.html"


def test_other_window_host_rejected(server: PageServer) -> None:
    main, settings = server.site("main"), server.site("settings")

    response = rawhttp.request(main.port, "GET", "/index.html", host=settings.host_header)

    assert response.status == 421


def test_unknown_window_error(server: PageServer) -> None:
    with pytest.raises(Exception) as raised:
        server.site("nope")

    assert getattr(raised.value, "reason", None) == "unknown_window"


def test_methods_other_than_get_rejected(server: PageServer) -> None:
    port = main_port(server)
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        response = rawhttp.request(port, method, "/index.html", body=b"{}" if method != "OPTIONS" else b"")
        assert response.status == 405, method


def test_head_has_no_body(server: PageServer) -> None:
    response = rawhttp.request(main_port(server), "HEAD", "/index.html")

    assert response.status == 200
    assert response.body == b""


def test_transport_follows_mode(tmp_path: Path) -> None:
    manifest = load_manifest(make_app(tmp_path))
    bodies = {}
    for mode in ("desktop", "browser"):
        pages = PageServer(manifest, mode=mode, sidecar_origin=lambda: None)
        pages.start()
        try:
            # Without a gate browser mode serves pages without sessions; the gate has its own tests.
            bodies[mode] = rawhttp.request(pages.site("main").port, "GET", "/keyside/transport.js").body
        finally:
            pages.stop()

    assert b"_QWebChannel" in bodies["desktop"]
    assert b"/keyside/ipc" in bodies["browser"]


def test_stop_closes_listeners(tmp_path: Path) -> None:
    manifest = load_manifest(make_app(tmp_path))
    pages = PageServer(manifest, mode="desktop", sidecar_origin=lambda: None)
    pages.start()
    port = pages.site("main").port

    pages.stop()

    with pytest.raises(OSError):
        rawhttp.request(port, "GET", "/index.html")


def test_unknown_mode_rejected(tmp_path: Path) -> None:
    manifest = load_manifest(make_app(tmp_path))

    with pytest.raises(ValueError, match="mode"):
        PageServer(manifest, mode="kiosk", sidecar_origin=lambda: None)


RESOLVE_CASES = [
    ("/index.html", "index.html"),
    ("/js/app.js", "js/app.js"),
    ("/../canary.txt", None),
    ("/js/../index.html", None),
    ("/./index.html", None),
    ("/.hidden", None),
    ("/index.html\x00.js", None),
    ("/js\\app.js", None),
    ("index.html", None),
    ("//index.html", None),
    ("/js", None),
    ("/secret.py", None),
    ("/link-out.txt", None),
]


@pytest.mark.parametrize(("request_path", "expected"), RESOLVE_CASES, ids=[c[0] for c in RESOLVE_CASES])
def test_resolve_page_file(tmp_path: Path, request_path: str, expected: str | None) -> None:
    pages = make_app(tmp_path) / "pages"

    resolved = resolve_page_file(pages, request_path)

    assert resolved == (None if expected is None else (pages / expected).resolve())


ORIGIN_CASES = [
    ("http://127.0.0.1:8000/x?y#z", "http://127.0.0.1:8000"),
    ("HTTP://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("http://127.0.0.1/", "http://127.0.0.1:80"),
    ("https://example.org/", "https://example.org:443"),
    ("http://[::1]:9000/", "http://[::1]:9000"),
    ("http://127.0.0.1:8000.evil.com/", None),
    ("http://127.0.0.1:99999/", None),
    ("about:blank", None),
    ("data:text/html,<b>x</b>", None),
    ("file:///etc/passwd", None),
    ("javascript:alert(1)", None),
    ("", None),
]


@pytest.mark.parametrize(("url", "expected"), ORIGIN_CASES, ids=[c[0] or "empty" for c in ORIGIN_CASES])
def test_origin_of(url: str, expected: str | None) -> None:
    assert origin_of(url) == expected


def test_assets_exist_for_both_modes() -> None:
    for mode in ("desktop", "browser"):
        assert asset_file("bridge.js", mode) is not None
        assert asset_file("transport.js", mode) is not None
    assert asset_file("transport-desktop.js", "desktop") is None
    assert asset_file("../bridge.js", "desktop") is None


def test_content_types_are_explicit() -> None:
    for suffix, content_type in CONTENT_TYPES.items():
        assert suffix.startswith(".")
        assert "/" in content_type
    assert ".py" not in CONTENT_TYPES
    assert ".toml" not in CONTENT_TYPES

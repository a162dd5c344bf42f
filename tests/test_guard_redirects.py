"""Redirects: each hop re-checked and pinned, credentials dropped across origins, a hop limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from multidict import CIMultiDict

import test_guard_client
from keyside.guard import GuardDenied, GuardLimits, check_url
from keyside.guard.redirects import plan_redirect
from test_guard_client import DialSpy, Serve, echo_app, fetch_json, make_client

# Fixtures shared with test_guard_client.
dial_spy = test_guard_client.dial_spy
serve = test_guard_client.serve


SECRET = "sk-live-7Hq2xZp9Lw"


def _redirect_url(port: int, to: str, status: int = 302) -> str:
    return f"http://127.0.0.1:{port}/redirect?status={status}&to={quote(to, safe='')}"


async def test_same_origin_redirect_followed(serve: Serve) -> None:
    port = await serve(echo_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        async with client.request("GET", _redirect_url(port, "/echo?page=2")) as response:
            assert response.status == 200
            assert response.redirects == 1
            assert response.url == f"http://127.0.0.1:{port}/echo?page=2"


@pytest.mark.parametrize("location,reason", [
    ("http://169.254.169.254/latest/meta-data/", "deny_metadata"),
    ("http://[::ffff:a9fe:a9fe]/", "deny_metadata"),
    ("http://2130706433:22/", "deny_loopback"),
    ("http://10.0.0.1/admin", "deny_private"),
    ("http://intranet.test/", "deny_private"),
    ("http://[fd00::1]/", "deny_unique_local"),
    ("ftp://files.example.com/", "url_scheme"),
    ("http://user:pw@api.example.com/", "url_userinfo"),
    ("http://api.example.com\\@127.0.0.1/", "url_backslash"),
    ("file:///etc/passwd", "url_scheme"),
])
async def test_redirect_to_denied_target(location: str, reason: str, serve: Serve, dial_spy: DialSpy) -> None:
    port = await serve(echo_app())
    async with make_client([f"127.0.0.1:{port}"], mapping={"intranet.test": ["192.168.1.10"]}) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", _redirect_url(port, location)):
                pass
    assert caught.value.reason == reason
    assert dial_spy.to_port(port) == ["127.0.0.1"]
    assert dial_spy.non_loopback() == []
    assert len(dial_spy.attempts) == 1


async def test_redirect_to_unallowed_loopback_port(serve: Serve, dial_spy: DialSpy) -> None:
    port = await serve(echo_app())
    other = await serve(echo_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", _redirect_url(port, f"http://127.0.0.1:{other}/echo")):
                pass
    assert caught.value.reason == "deny_loopback"
    assert dial_spy.to_port(other) == []


async def test_redirect_limit(serve: Serve, dial_spy: DialSpy) -> None:
    port = await serve(echo_app())
    limits = GuardLimits(max_redirects=3, connect_timeout_s=2.0, read_timeout_s=5.0, total_timeout_s=10.0)
    loop_url = _redirect_url(port, "/redirect?to=/redirect%3Fto%3D/redirect")
    async with make_client([f"127.0.0.1:{port}"], limits=limits) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", _redirect_url(port, loop_url)):
                pass
    assert caught.value.reason == "redirect_limit"


async def test_redirect_limit_counts_hops(serve: Serve) -> None:
    log: list[dict[str, Any]] = []
    port = await serve(echo_app(log))
    limits = GuardLimits(max_redirects=2, connect_timeout_s=2.0, read_timeout_s=5.0, total_timeout_s=10.0)
    self_loop = f"http://127.0.0.1:{port}/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/redirect"
    async with make_client([f"127.0.0.1:{port}"], limits=limits) as client:
        with pytest.raises(GuardDenied):
            async with client.request("GET", self_loop):
                pass
    assert len(log) == 3


async def test_redirects_not_followed_when_refused(serve: Serve) -> None:
    port = await serve(echo_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        async with client.request("GET", _redirect_url(port, "http://169.254.169.254/"),
                                  follow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"] == "http://169.254.169.254/"
            assert response.redirects == 0


async def test_cross_origin_drops_credentials(serve: Serve) -> None:
    log: list[dict[str, Any]] = []
    first = await serve(echo_app())
    second = await serve(echo_app(log))
    target = f"http://127.0.0.1:{second}/echo?api_key={SECRET}&keep=1"
    headers = {"Authorization": f"Bearer {SECRET}", "Cookie": "session=1", "X-Api-Key": SECRET,
               "Proxy-Authorization": "Basic eDp5", "X-Trace": "kept"}
    async with make_client([f"127.0.0.1:{first}", f"127.0.0.1:{second}"]) as client:
        status, _ = await fetch_json(client, _redirect_url(first, target), headers=headers,
                                     sensitive_headers=["x-api-key"], sensitive_query_params=["api_key"])
    assert status == 200
    received = log[0]["headers"]
    for name in ("Authorization", "Cookie", "X-Api-Key", "Proxy-Authorization"):
        assert name not in received
    assert received["X-Trace"] == "kept"
    assert log[0]["path_qs"] == "/echo?keep=1"


async def test_same_origin_keeps_credentials(serve: Serve) -> None:
    log: list[dict[str, Any]] = []
    port = await serve(echo_app(log))
    async with make_client([f"127.0.0.1:{port}"]) as client:
        await fetch_json(client, _redirect_url(port, f"/echo?api_key={SECRET}"),
                         headers={"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET},
                         sensitive_headers=["x-api-key"], sensitive_query_params=["api_key"],
                         sensitive_values=[SECRET])
    echoed = log[-1]
    assert echoed["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert echoed["headers"]["X-Api-Key"] == SECRET
    assert echoed["path_qs"] == f"/echo?api_key={SECRET}"


@pytest.mark.parametrize("shape", ["path", "other-param", "percent-encoded"])
async def test_cross_origin_leak_denied(shape: str, serve: Serve, dial_spy: DialSpy) -> None:
    log: list[dict[str, Any]] = []
    first = await serve(echo_app())
    second = await serve(echo_app(log))
    leak = {
        "path": f"/bot{SECRET}/getMe",
        "other-param": f"/echo?token={SECRET}",
        "percent-encoded": "/echo?k=" + "".join(f"%{ord(c):02X}" for c in SECRET),
    }[shape]
    async with make_client([f"127.0.0.1:{first}", f"127.0.0.1:{second}"]) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", _redirect_url(first, f"http://127.0.0.1:{second}{leak}"),
                                      sensitive_values=[SECRET]):
                pass
    assert caught.value.reason == "redirect_leaks_secret"
    assert SECRET not in str(caught.value)
    assert log == []
    assert dial_spy.to_port(second) == []


@pytest.mark.parametrize("status,method,expected_method,body_kept", [
    (301, "POST", "GET", False),
    (302, "POST", "GET", False),
    (303, "POST", "GET", False),
    (303, "PUT", "GET", False),
    (307, "POST", "POST", True),
    (308, "PUT", "PUT", True),
    (301, "PUT", "PUT", True),
])
async def test_redirect_method_rules(status: int, method: str, expected_method: str, body_kept: bool,
                                     serve: Serve) -> None:
    port = await serve(echo_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        _, body = await fetch_json(client, _redirect_url(port, "/echo", status), method=method,
                                   data=b"form=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert body["method"] == expected_method
    assert body["body"] == ("form=1" if body_kept else "")
    assert ("Content-Type" in body["headers"]) is body_kept


async def test_streamed_body_not_replayed(serve: Serve) -> None:
    port = await serve(echo_app())

    async def parts() -> AsyncIterator[bytes]:
        yield b"once"

    async with make_client([f"127.0.0.1:{port}"]) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("POST", _redirect_url(port, "/echo", 307), data=parts()):
                pass
    assert caught.value.reason == "redirect_body_not_replayable"


# --- plan_redirect on its own, for hops no loopback server can show (scheme changes) ---

def test_scheme_change_is_cross_origin() -> None:
    current = check_url("http://api.example.com/v1")
    headers = CIMultiDict({"Authorization": "Bearer x", "X-Api-Key": "x"})
    hop = plan_redirect(current, "GET", 301, "https://api.example.com/v1", headers,
                        sensitive_headers=["X-Api-Key"])
    assert hop.cross_origin is True
    assert "Authorization" not in hop.headers
    assert "X-Api-Key" not in hop.headers


def test_https_downgrade_drops_credentials() -> None:
    current = check_url("https://api.example.com/v1")
    hop = plan_redirect(current, "GET", 302, "http://api.example.com/v1", CIMultiDict({"Cookie": "a=b"}))
    assert hop.cross_origin is True
    assert "Cookie" not in hop.headers


def test_port_change_is_cross_origin() -> None:
    current = check_url("https://api.example.com/")
    hop = plan_redirect(current, "GET", 302, "https://api.example.com:8443/", CIMultiDict())
    assert hop.cross_origin is True


def test_default_port_spelled_out_is_same_origin() -> None:
    current = check_url("https://api.example.com/")
    hop = plan_redirect(current, "GET", 302, "https://API.example.com:443/next", CIMultiDict({"Authorization": "a"}))
    assert hop.cross_origin is False
    assert hop.headers["Authorization"] == "a"


def test_relative_location_resolved() -> None:
    current = check_url("https://api.example.com/v1/models?x=1")
    hop = plan_redirect(current, "GET", 302, "../v2/models", CIMultiDict())
    assert hop.target.url == "https://api.example.com/v2/models"


def test_scheme_relative_location_checked() -> None:
    current = check_url("https://api.example.com/")
    hop = plan_redirect(current, "GET", 302, "//other.example.com/x", CIMultiDict())
    assert hop.target.url == "https://other.example.com/x"
    assert hop.cross_origin is True

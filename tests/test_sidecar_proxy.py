"""A real sidecar process in front of fake provider upstreams: Host and CORS checks, the service
proxy, key injection and scrubbing, redirects, streams, the feed proxy and the log file.

Every upstream runs on 127.0.0.1 and records what it received, so each attack case asserts both
the sidecar's response and that nothing (or nothing secret) reached an upstream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from keyside.manifest import ValidateSpec
from keyside.redact import MASK
from sidecar_process import (
    SidecarProcess,
    basic,
    bearer,
    header,
    path_template,
    query,
    raw_http,
    service,
)
from upstreams import BASIC_USERNAME, BackgroundUpstreams, UpstreamServer

DATA = Path(__file__).parent / "data"
HOST_CASES = json.loads((DATA / "sidecar_host_headers.json").read_text())
ORIGIN_CASES = json.loads((DATA / "sidecar_origins.json").read_text())
PATH_CASES = json.loads((DATA / "sidecar_paths.json").read_text())["cases"]
HEADER_CASES = json.loads((DATA / "sidecar_request_headers.json").read_text())

KEYS = {
    "BEARER_KEY": "sk-bearer-7Hq2LmX9pR4vT1zK8wN3",
    "HEADER_KEY": "hdr_live_Zx81Qm4Ln7Wc2Pv9Rt5y",
    "QUERY_KEY": "qk/with+plus=and-slash_0042",
    "BASIC_KEY": "basic-pass-Gh72Kd91Lq0Xz3",
    "PATH_KEY": "123456:AAE-bot-token_Qw8Zx",
}
APP_ORIGIN = "http://127.0.0.1:5173"
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=15)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, UpstreamServer]]:
    servers = {
        "bearer": UpstreamServer(KEYS["BEARER_KEY"]),
        "header": UpstreamServer(KEYS["HEADER_KEY"]),
        "query": UpstreamServer(KEYS["QUERY_KEY"]),
        "basic": UpstreamServer(KEYS["BASIC_KEY"]),
        "path": UpstreamServer(KEYS["PATH_KEY"]),
        "other": UpstreamServer("other-upstream-key-0000"),  # an allowed private origin without a key
        "stranger": UpstreamServer("stranger-key-0000"),  # a loopback origin nothing allows
    }
    with BackgroundUpstreams(*servers.values()):
        yield servers


@pytest.fixture(scope="module")
def sidecar(upstreams: dict[str, UpstreamServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    ups = upstreams
    all_methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    services = [
        service("bearer", ups["bearer"].origin, secret="BEARER_KEY", inject=bearer(), methods=all_methods,
                paths=["/bearer/", "/echo/", "/v1/", "/sse", "/leak", "/leak-sse", "/leak-base64", "/redirect",
                       "/stall", "/stall-headers", "/stall-body", "/gzip", "/status/", "/hostile-headers"],
                validate=ValidateSpec("/v1/models")),
        service("header", ups["header"].origin, secret="HEADER_KEY", inject=header("X-Api-Key"),
                methods=["GET", "POST"], paths=["/header/", "/echo/"]),
        service("query", ups["query"].origin, secret="QUERY_KEY", inject=query("api_key"),
                paths=["/query/", "/echo/", "/redirect"]),
        service("basic", ups["basic"].origin, secret="BASIC_KEY", inject=basic(BASIC_USERNAME),
                paths=["/basic/", "/echo/"]),
        service("bot", ups["path"].origin, secret="PATH_KEY", inject=path_template("/bot{key}"), paths=["/"]),
        service("keyless", ups["other"].origin, paths=["/echo/", "/feed/"]),
        service("unset", ups["other"].origin, secret="UNSET_KEY", inject=bearer(), paths=["/"]),
        service("pathcheck", ups["other"].origin, methods=["GET"], paths=["/v1/", "/api/quote"]),
    ]
    log_dir = tmp_path_factory.mktemp("sidecar-logs")
    process = SidecarProcess(
        services=services, secrets=KEYS, origins=[APP_ORIGIN], log_dir=log_dir, log_level="DEBUG",
        allow_private=[f"127.0.0.1:{ups['other'].port}"],
        limits={"connect_timeout_s": 2.0, "read_timeout_s": 1.0, "total_timeout_s": 10.0},
    )
    with process:
        yield process


@pytest.fixture
async def client() -> Any:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        yield session


def clear(upstreams: dict[str, UpstreamServer]) -> None:
    for server in upstreams.values():
        server.clear()


def nothing_received(upstreams: dict[str, UpstreamServer]) -> bool:
    return all(not server.requests for server in upstreams.values())


async def get(client: aiohttp.ClientSession, sidecar: SidecarProcess, path: str,
              **kwargs: Any) -> tuple[int, Any, bytes]:
    headers = {**sidecar.auth_headers(), **kwargs.pop("headers", {})}
    method = kwargs.pop("method", "GET")
    async with client.request(method, sidecar.url(path), headers=headers, **kwargs) as response:
        return response.status, response.headers, await response.read()


def error_reason(body: bytes) -> str | None:
    try:
        return json.loads(body)["error"]["reason"]
    except (ValueError, KeyError, TypeError):
        return None


def redirect_path(service_name: str, target: UpstreamServer, extra_query: str = "") -> str:
    """Build a sidecar path whose upstream responds with a redirect to `target`'s /echo/landed."""
    location = quote(target.url("/echo/landed"), safe="")
    return f"/api/svc/{service_name}/redirect?to={location}{extra_query}"


# ---- Host header -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", HOST_CASES["cases"], ids=[case["id"] for case in HOST_CASES["cases"]])
def test_host_header(case: dict[str, Any], sidecar: SidecarProcess) -> None:
    host = case["host"].format(port=sidecar.port, other=sidecar.port + 1)
    request = f"GET /api/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    status, headers, body = raw_http(sidecar.port, request)
    if case.get("allowed"):
        assert status == 200
        assert json.loads(body) == {"ok": True, "version": json.loads(body)["version"]}
        return
    assert status == case["status"]
    assert error_reason(body) == case["reason"]
    assert "access-control-allow-origin" not in headers


@pytest.mark.parametrize("case", HOST_CASES["raw_cases"], ids=[case["id"] for case in HOST_CASES["raw_cases"]])
def test_host_header_raw(case: dict[str, Any], sidecar: SidecarProcess) -> None:
    status, _, body = raw_http(sidecar.port, case["request"].format(port=sidecar.port).encode())
    assert status == case["status"]
    if "reason" in case:
        assert error_reason(body) == case["reason"]


def test_rebinding_host_rejected_before_token(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer]) -> None:
    clear(upstreams)
    request = (f"GET /api/svc/bearer/bearer/x HTTP/1.1\r\nHost: attacker.example:{sidecar.port}\r\n"
               f"Authorization: Bearer {sidecar.token}\r\nOrigin: {APP_ORIGIN}\r\nConnection: close\r\n\r\n")
    status, headers, body = raw_http(sidecar.port, request.encode())
    assert status == 421
    assert error_reason(body) == "host_not_allowed"
    assert "access-control-allow-origin" not in headers
    assert nothing_received(upstreams)


# ---- CORS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cors_sidecar(sidecar: SidecarProcess) -> Iterator[SidecarProcess]:
    reply = sidecar.control({"type": "set_origins", "origins": ORIGIN_CASES["app_origins"]})
    assert reply["ok"] is True
    yield sidecar
    sidecar.control({"type": "set_origins", "origins": [APP_ORIGIN]})


@pytest.mark.parametrize("case", ORIGIN_CASES["cases"], ids=[case["id"] for case in ORIGIN_CASES["cases"]])
async def test_cors_origin(case: dict[str, Any], cors_sidecar: SidecarProcess,
                           client: aiohttp.ClientSession) -> None:
    status, headers, body = await get(client, cors_sidecar, "/api/status", headers={"Origin": case["origin"]})
    if case["allowed"]:
        assert status == 200
        assert headers["Access-Control-Allow-Origin"] == case["origin"]
        assert "Origin" in headers.getall("Vary")
        assert "Access-Control-Allow-Credentials" not in headers
        return
    assert status == 403
    assert error_reason(body) == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in headers


@pytest.mark.parametrize("case", ORIGIN_CASES["cases"], ids=[case["id"] for case in ORIGIN_CASES["cases"]])
async def test_cors_preflight(case: dict[str, Any], cors_sidecar: SidecarProcess,
                              client: aiohttp.ClientSession) -> None:
    headers = {"Origin": case["origin"], "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, content-type",
               "Access-Control-Request-Private-Network": "true"}
    async with client.options(cors_sidecar.url("/api/svc/bearer/echo/x"), headers=headers) as response:
        if case["allowed"]:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == case["origin"]
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
            assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
            assert response.headers["Access-Control-Allow-Private-Network"] == "true"
            return
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Private-Network" not in response.headers


async def test_cors_headers_on_errors(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    # The page must be able to read the reason of a 401 to refresh its token.
    async with client.get(sidecar.url("/api/status"), headers={"Origin": APP_ORIGIN}) as response:
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert response.headers["X-Keyside-Error"] == "token_missing"
        assert "X-Keyside-Error" in response.headers["Access-Control-Expose-Headers"]


async def test_foreign_form_post_rejected(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                          client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    async with client.post(sidecar.url("/api/svc/bearer/echo/x"), data={"prompt": "leak"},
                           headers={"Origin": "https://attacker.example"}) as response:
        assert response.status == 403
        assert error_reason(await response.read()) == "origin_not_allowed"
    assert nothing_received(upstreams)


# ---- the service proxy -------------------------------------------------------------------------

INJECTION_CASES = [
    ("bearer", "/api/svc/bearer/bearer/models", "bearer", "BEARER_KEY"),
    ("header", "/api/svc/header/header/quote", "header", "HEADER_KEY"),
    ("query", "/api/svc/query/query/series?id=UNRATE", "query", "QUERY_KEY"),
    ("basic", "/api/svc/basic/basic/me", "basic", "BASIC_KEY"),
    ("path", "/api/svc/bot/getMe", "path", "PATH_KEY"),
]


@pytest.mark.parametrize(("upstream", "path", "via", "secret"), [case[:4] for case in INJECTION_CASES],
                         ids=[case[0] for case in INJECTION_CASES])
async def test_key_injected(upstream: str, path: str, via: str, secret: str, sidecar: SidecarProcess,
                            upstreams: dict[str, UpstreamServer], client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    status, _, body = await get(client, sidecar, path)
    assert status == 200, body
    assert json.loads(body)["via"] == via
    received = upstreams[upstream].requests
    assert len(received) == 1
    assert not received[0].contains(sidecar.token)
    for name, value in KEYS.items():
        if name != secret:
            assert not received[0].contains(value)


async def test_keys_reach_only_their_upstream(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                             client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    for _, path, _, _ in INJECTION_CASES:
        await get(client, sidecar, path)
    for path in ("/api/svc/header/echo/x", "/api/svc/query/echo/x", "/api/svc/basic/echo/x",
                 "/api/svc/keyless/echo/x", "/api/svc/bearer/echo/x"):
        await get(client, sidecar, path)
    own = {"bearer": "BEARER_KEY", "header": "HEADER_KEY", "query": "QUERY_KEY", "basic": "BASIC_KEY",
           "path": "PATH_KEY"}
    for name, server in upstreams.items():
        if name in own:
            assert server.requests, name
        for secret, value in KEYS.items():
            if own.get(name) != secret:
                assert not server.received(value), f"{secret} reached {name}"
                assert not server.received(quote(value, safe="")), f"{secret} reached {name}"
        assert not server.received(sidecar.token)


async def test_credential_headers_stripped(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                           client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    headers = {name: value for name, value in HEADER_CASES["stripped"] + HEADER_CASES["forwarded"]}
    headers["Connection"] = "keep-alive, X-Hop"
    status, _, body = await get(client, sidecar, "/api/svc/header/echo/x", headers=headers)
    assert status == 200, body
    (received,) = upstreams["header"].requests
    names = [name.lower() for name, _ in received.headers]
    assert names.count("x-api-key") == 1
    assert received.header("X-Api-Key") == KEYS["HEADER_KEY"]
    assert received.header("Authorization") is None
    for name, value in HEADER_CASES["stripped"]:
        assert not received.contains(value), name
    for name, value in HEADER_CASES["forwarded"]:
        assert received.header(name) == value, name


async def test_caller_query_key_replaced(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                         client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    status, _, _ = await get(client, sidecar, "/api/svc/query/query/x?api_key=attacker&API_KEY=again&a=1")
    assert status == 200
    (received,) = upstreams["query"].requests
    assert received.query == f"a=1&api_key={quote(KEYS['QUERY_KEY'], safe='')}"


@pytest.mark.parametrize("case", PATH_CASES, ids=[case["id"] for case in PATH_CASES])
def test_service_path(case: dict[str, Any], sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer]) -> None:
    clear(upstreams)
    target = "/api/svc/pathcheck" + case["path"]
    request = (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{sidecar.port}\r\nAuthorization: Bearer {sidecar.token}"
               "\r\nConnection: close\r\n\r\n").encode()
    status, _, body = raw_http(sidecar.port, request)
    if case["status"] == 200:
        (received,) = upstreams["other"].requests
        assert received.path == case["path"]
        return
    assert status == case["status"]
    if status != 400 or error_reason(body) is not None:
        # A raw non-ASCII or backslash target may be refused by the HTTP parser before the sidecar.
        assert error_reason(body) == case["reason"]
    assert nothing_received(upstreams)


PROXY_REJECTIONS = [
    ("method_not_allowed", "DELETE", "/api/svc/header/header/x", 405, "method_not_allowed"),
    ("unknown_service", "GET", "/api/svc/nosuch/x", 404, "unknown_service"),
    ("unknown_route", "GET", "/api/other", 404, "not_found"),
    ("secret_not_configured", "GET", "/api/svc/unset/x", 424, "secret_not_configured"),
    ("encoded_crlf_in_query", "GET", "/api/svc/bearer/echo/x?q=%0d%0aX-Injected:%201", 400, "invalid_query"),
    ("token_in_path", "GET", "/api/svc/bearer/echo/{token}", 400, "token_in_url"),
    ("token_in_query", "GET", "/api/svc/bearer/echo/x?token={token}", 400, "token_in_url"),
]


@pytest.mark.parametrize(("method", "path", "status", "reason"), [case[1:] for case in PROXY_REJECTIONS],
                         ids=[case[0] for case in PROXY_REJECTIONS])
async def test_proxy_rejections(method: str, path: str, status: int, reason: str, sidecar: SidecarProcess,
                                upstreams: dict[str, UpstreamServer], client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    url = sidecar.url(path.format(token=sidecar.token))
    async with client.request(method, url, headers=sidecar.auth_headers()) as response:
        body = await response.read()
        assert response.status == status
        assert error_reason(body) == reason
        assert response.headers["X-Keyside-Error"] == reason
        assert sidecar.token.encode() not in body
    assert nothing_received(upstreams)


@pytest.mark.parametrize("header_line", ["X-Note: a\rb", "X-Note: a\x00b", "X\x00Note: a"],
                         ids=["bare_cr", "nul_value", "nul_name"])
def test_control_characters_in_headers(header_line: str, sidecar: SidecarProcess,
                                       upstreams: dict[str, UpstreamServer]) -> None:
    clear(upstreams)
    request = (f"GET /api/svc/bearer/echo/x HTTP/1.1\r\nHost: 127.0.0.1:{sidecar.port}\r\n"
               f"Authorization: Bearer {sidecar.token}\r\n{header_line}\r\nConnection: close\r\n\r\n").encode()
    status, _, _ = raw_http(sidecar.port, request)
    assert status == 400
    assert nothing_received(upstreams)


def test_request_body_too_large(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer]) -> None:
    clear(upstreams)
    request = (f"POST /api/svc/bearer/echo/x HTTP/1.1\r\nHost: 127.0.0.1:{sidecar.port}\r\n"
               f"Authorization: Bearer {sidecar.token}\r\nContent-Type: application/json\r\n"
               "Content-Length: 40000000\r\nConnection: close\r\n\r\n{").encode()
    status, _, body = raw_http(sidecar.port, request)
    assert status == 413
    assert error_reason(body) == "request_too_large"
    assert nothing_received(upstreams)


async def test_head_request_has_no_body(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                         client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    status, headers, body = await get(client, sidecar, "/api/svc/bearer/echo/x", method="HEAD")
    assert status == 200
    assert body == b""
    assert headers["Content-Type"].startswith("application/json")
    (received,) = upstreams["bearer"].requests
    assert received.method == "HEAD"


async def test_request_body_forwarded(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                      client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    payload = {"messages": [{"role": "user", "content": "hello"}]}
    status, _, _ = await get(client, sidecar, "/api/svc/bearer/echo/chat", method="POST", json=payload)
    assert status == 200
    (received,) = upstreams["bearer"].requests
    assert json.loads(received.body) == payload
    assert received.header("Content-Type") == "application/json"


# ---- scrubbing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [1, 11, 15, 20, 30, 50])
async def test_key_echo_scrubbed(split: int, sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, headers, body = await get(client, sidecar, f"/api/svc/bearer/leak?split={split}")
    assert status == 200
    assert KEYS["BEARER_KEY"].encode() not in body
    assert body.count(MASK.encode()) == 2
    assert headers["X-Echo-Key"] == MASK
    assert headers["X-Other"] == f"v={MASK};"


async def test_key_echo_in_sse_scrubbed(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, _, body = await get(client, sidecar, "/api/svc/bearer/leak-sse")
    assert status == 200
    assert body == f"data: first\n\ndata: key={MASK}\n\ndata: last\n\n".encode()


async def test_base64_key_echo_scrubbed(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, _, body = await get(client, sidecar, "/api/svc/bearer/leak-base64")
    assert status == 200
    key = KEYS["BEARER_KEY"].encode()
    reply = json.loads(body)
    assert reply["alone"] == MASK
    assert base64.b64encode(key) not in body
    # Inside the blob, at most 2 bytes at each end of the key (4 characters each) stay visible.
    sent_blob = base64.urlsafe_b64encode(b'{"sub": "' + key + b'"}').decode()
    assert MASK in reply["blob"]
    visible = reply["blob"].replace(MASK, "")
    assert len(sent_blob) - len(visible) >= (len(key) - 4) * 4 // 3


@pytest.mark.parametrize(("path", "secret"), [
    ("/api/svc/header/echo/x", "HEADER_KEY"),
    ("/api/svc/query/echo/x?a=1", "QUERY_KEY"),
    ("/api/svc/basic/echo/x", "BASIC_KEY"),
    ("/api/svc/bearer/echo/x", "BEARER_KEY"),
], ids=["header", "query", "basic", "bearer"])
async def test_injected_key_echo_scrubbed(path: str, secret: str, sidecar: SidecarProcess,
                                          client: aiohttp.ClientSession) -> None:
    status, _, body = await get(client, sidecar, path)
    assert status == 200
    value = KEYS[secret]
    assert value.encode() not in body
    assert quote(value, safe="").encode() not in body
    assert base64.b64encode(f"{BASIC_USERNAME}:{value}".encode()) not in body
    assert MASK.encode() in body


async def test_hostile_response_headers_dropped(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, headers, _ = await get(client, sidecar, "/api/svc/bearer/hostile-headers")
    assert status == 200
    for name in ("Set-Cookie", "WWW-Authenticate", "Access-Control-Allow-Origin",
                 "Access-Control-Allow-Credentials", "Strict-Transport-Security", "Clear-Site-Data"):
        assert name not in headers, name
    assert headers["X-Upstream-Note"] == "kept"
    assert headers["Content-Security-Policy"].endswith("sandbox")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"


async def test_compressed_upstream_decoded(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    async with client.get(sidecar.url("/api/svc/bearer/gzip"), headers=sidecar.auth_headers(),
                          auto_decompress=False) as response:
        assert response.status == 200
        assert "Content-Encoding" not in response.headers
        assert json.loads(await response.read())["compressed"] is True


# ---- redirects ---------------------------------------------------------------------------------


async def test_same_origin_redirect_keeps_key(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, _, body = await get(client, sidecar, "/api/svc/bearer/redirect?to=/bearer/after")
    assert status == 200
    assert json.loads(body) == {"ok": True, "via": "bearer", "path": "/bearer/after"}


async def test_cross_origin_redirect_drops_key(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                               client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    status, _, _ = await get(client, sidecar, redirect_path("bearer", upstreams["other"]))
    assert status == 200
    (received,) = upstreams["other"].requests
    assert received.path == "/echo/landed"
    assert received.header("Authorization") is None
    assert not received.contains(KEYS["BEARER_KEY"])


async def test_redirect_to_unallowed_loopback_denied(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                                     client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    status, _, body = await get(client, sidecar, redirect_path("bearer", upstreams["stranger"]))
    assert status == 502
    assert error_reason(body) == "deny_loopback"
    assert not upstreams["stranger"].requests


async def test_redirect_copying_query_key_denied(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                                 client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    status, _, body = await get(client, sidecar, redirect_path("query", upstreams["other"], "&keep_query=1"))
    assert status == 502
    assert error_reason(body) == "redirect_leaks_secret"
    assert not upstreams["other"].requests
    assert KEYS["QUERY_KEY"].encode() not in body


# ---- streams and stalls ------------------------------------------------------------------------


async def test_sse_events_arrive_one_by_one(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer],
                                            client: aiohttp.ClientSession) -> None:
    upstreams["bearer"].sse_sent_ns.clear()
    async with client.get(sidecar.url("/api/svc/bearer/sse?events=3&interval_ms=300"),
                          headers=sidecar.auth_headers()) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        first = await response.content.readuntil(b"\n\n")
        # The upstream writes event 2 some 600 ms after event 0; a buffering proxy would hold
        # event 0 until then.
        sent_when_first_read = set(upstreams["bearer"].sse_sent_ns)
        rest = await response.read()
    assert first.startswith(b"id: 0\n")
    assert 2 not in sent_when_first_read
    assert rest.count(b"\n\n") == 2


async def test_openai_stream_relayed(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, headers, body = await get(client, sidecar, "/api/svc/bearer/v1/chat/completions", method="POST",
                                      json={"model": "fake-model", "stream": True, "messages": []})
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = [line[6:] for line in body.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(event)["choices"][0]["delta"]["content"] for event in events[:-1])
    assert text == "Hello from the loopback model."


async def test_stalled_headers_time_out(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, _, body = await get(client, sidecar, "/api/svc/bearer/stall-headers")
    assert status == 504
    assert error_reason(body) == "timeout_read"


async def test_stalled_small_body_times_out(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    # A body of announced small length is read whole before anything is sent, so a stall in it
    # still becomes an error response.
    status, _, body = await get(client, sidecar, "/api/svc/bearer/stall-body")
    assert status == 504
    assert error_reason(body) == "timeout_read"


async def test_stalled_body_cut(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    async with client.get(sidecar.url("/api/svc/bearer/stall"), headers=sidecar.auth_headers()) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_client_leaving_stream_is_survived(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    async with client.get(sidecar.url("/api/svc/bearer/sse?events=50&interval_ms=20"),
                          headers=sidecar.auth_headers()) as response:
        await response.content.readuntil(b"\n\n")
    await asyncio.sleep(0.1)
    status, _, _ = await get(client, sidecar, "/api/health")
    assert status == 200


# ---- feed proxy --------------------------------------------------------------------------------


@pytest.mark.parametrize(("feed", "content_type"), [("/feed/rss", "application/rss+xml"),
                                                    ("/feed/atom", "application/atom+xml")], ids=["rss", "atom"])
async def test_feed_fetched(feed: str, content_type: str, sidecar: SidecarProcess,
                            upstreams: dict[str, UpstreamServer], client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    url = quote(upstreams["other"].url(feed), safe="")
    status, headers, body = await get(client, sidecar, f"/api/feed?url={url}")
    assert status == 200
    assert headers["Content-Type"].startswith(content_type)
    assert b"headline" in body
    (received,) = upstreams["other"].requests
    assert received.header("Authorization") is None
    assert not received.contains(sidecar.token)


FEED_REJECTIONS = [
    ("html_page", "{other}/feed/html", 502, "feed_content_type"),
    ("too_large", "{other}/feed/big?bytes=6000000", 502, "response_too_large"),
    ("upstream_error", "{other}/status/500", 502, "upstream_status"),
    ("loopback_not_allowed", "{stranger}/feed/rss", 403, "deny_loopback"),
    ("metadata_address", "http://169.254.169.254/latest/meta-data/", 403, "deny_metadata"),
    ("file_scheme", "file:///etc/passwd", 403, "url_scheme"),
    ("userinfo", "http://user:pass@127.0.0.1/feed", 403, "url_userinfo"),
]


@pytest.mark.parametrize(("url", "status", "reason"), [case[1:] for case in FEED_REJECTIONS],
                         ids=[case[0] for case in FEED_REJECTIONS])
async def test_feed_rejected(url: str, status: int, reason: str, sidecar: SidecarProcess,
                             upstreams: dict[str, UpstreamServer], client: aiohttp.ClientSession) -> None:
    clear(upstreams)
    feed_url = url.format(other=upstreams["other"].origin, stranger=upstreams["stranger"].origin)
    response_status, _, body = await get(client, sidecar, f"/api/feed?url={quote(feed_url, safe='')}")
    assert response_status == status
    assert error_reason(body) == reason
    assert not upstreams["stranger"].requests


@pytest.mark.parametrize("path", ["/api/feed", "/api/feed?url=", "/api/feed?url=a&url=b"],
                         ids=["missing", "empty", "twice"])
async def test_feed_url_required(path: str, sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, _, body = await get(client, sidecar, path)
    assert status == 400
    assert error_reason(body) == "feed_url_missing"


# ---- status, traffic and logs ------------------------------------------------------------------


async def test_health_without_token(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    async with client.get(sidecar.url("/api/health")) as response:
        assert response.status == 200
        assert set(await response.json()) == {"ok", "version"}


async def test_status_reports_without_values(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, _, body = await get(client, sidecar, "/api/status")
    assert status == 200
    report = json.loads(body)
    by_name = {entry["name"]: entry for entry in report["services"]}
    assert by_name["bearer"]["configured"] is True
    assert by_name["unset"]["configured"] is False
    assert by_name["keyless"]["configured"] is True
    assert report["counters"]["requests"] > 0
    for value in KEYS.values():
        assert value.encode() not in body
    assert sidecar.token.encode() not in body


async def test_traffic_has_paths_without_queries(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    await get(client, sidecar, "/api/svc/query/query/x?symbol=SECRETQUERY")
    status, _, body = await get(client, sidecar, "/api/traffic")
    assert status == 200
    entries = json.loads(body)["entries"]
    assert any(entry["path"] == "/api/svc/query/query/x" and entry["service"] == "query" for entry in entries)
    assert b"SECRETQUERY" not in body
    assert set(entries[-1]) == {"time", "method", "path", "status", "duration_ms", "service", "reason"}


def test_log_file_has_no_secrets(sidecar: SidecarProcess, upstreams: dict[str, UpstreamServer]) -> None:
    # Put a token into a path and a query, so the log has a chance to leak them, then read it.
    raw_http(sidecar.port, (f"GET /api/svc/query/query/x?symbol=SECRETQUERY HTTP/1.1\r\n"
                            f"Host: 127.0.0.1:{sidecar.port}\r\nConnection: close\r\n\r\n").encode())
    raw_http(sidecar.port, (f"GET /api/svc/bearer/echo/{sidecar.token}?q={sidecar.token} HTTP/1.1\r\n"
                            f"Host: 127.0.0.1:{sidecar.port}\r\nConnection: close\r\n\r\n").encode())
    log_dir = Path(sidecar.bootstrap["log_dir"])
    text = "\n".join(path.read_text() for path in log_dir.glob("sidecar.log*"))
    assert "request rejected" in text
    assert sidecar.token not in text
    for value in KEYS.values():
        assert value not in text
        assert quote(value, safe="") not in text
    assert "symbol=SECRETQUERY" not in text
    assert "api_key=" not in text
    stdout = sidecar.stdout_text() + sidecar.stderr_text()
    assert sidecar.token not in stdout
    for value in KEYS.values():
        assert value not in stdout

"""GuardedClient against the SSRF tables, explicit allowances, pinning and rebinding.

Every upstream here is our own aiohttp server on 127.0.0.1 or ::1, reached only through an
explicit allowance. Names resolve through StaticResolver or tests/dns_server.py. DialSpy
records every TCP connect of this process and refuses any non-loopback address before the
real connect runs, so a guard failure shows up as a recorded attempt, never as a packet.
This module also holds the helpers the other test_guard_* modules import.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dns_server import DnsServer
from keyside.guard import (
    DnsResolver,
    GuardDenied,
    GuardedClient,
    GuardLimits,
    GuardPolicy,
    StaticResolver,
    check_url,
)

DATA = Path(__file__).parent / "data"
URL_CASES = tomllib.loads((DATA / "ssrf_urls.toml").read_text())["case"]
ADDRESS_CASES = tomllib.loads((DATA / "ssrf_addresses.toml").read_text())["case"]
# Short limits keep the suite fast; the defaults are minutes long.
TEST_LIMITS = GuardLimits(connect_timeout_s=2.0, read_timeout_s=5.0, total_timeout_s=10.0)

Serve = Callable[..., Awaitable[int]]


class DialSpy:
    """Records every TCP connect in this process and refuses any address outside loopback."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.attempts: list[tuple[str, int]] = []
        fenced_connect = socket.socket.connect

        def connect(sock: socket.socket, address: Any) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                host, port = str(address[0]), int(address[1])
                self.attempts.append((host, port))
                if not _is_loopback(host):
                    raise ConnectionRefusedError(errno.ECONNREFUSED, f"dial spy refused {host}")
            return fenced_connect(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)

    def to_port(self, port: int) -> list[str]:
        return [host for host, attempt_port in self.attempts if attempt_port == port]

    def non_loopback(self) -> list[tuple[str, int]]:
        return [attempt for attempt in self.attempts if not _is_loopback(attempt[0])]


def _is_loopback(host: str) -> bool:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@pytest.fixture
def dial_spy(monkeypatch: pytest.MonkeyPatch) -> DialSpy:
    return DialSpy(monkeypatch)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start aiohttp apps on loopback; returns the port. All are stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, host: str = "127.0.0.1") -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


def echo_app(log: list[dict[str, Any]] | None = None) -> web.Application:
    """An upstream that answers /echo with what it received, and redirects on /redirect."""

    async def echo(request: web.Request) -> web.Response:
        seen = {"method": request.method, "path_qs": request.path_qs, "headers": dict(request.headers),
                "body": (await request.read()).decode("latin-1")}
        if log is not None:
            log.append(seen)
        return web.json_response(seen)

    async def redirect(request: web.Request) -> web.Response:
        if log is not None:
            log.append({"method": request.method, "path_qs": request.path_qs, "headers": dict(request.headers)})
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["to"]})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/redirect", redirect)
    return app


def make_client(allow: list[str] = (), mapping: dict[str, list[str]] | None = None,
                limits: GuardLimits = TEST_LIMITS, resolver: Any = None) -> GuardedClient:
    policy = GuardPolicy.from_strings(allow, limits)
    return GuardedClient(policy, resolver or StaticResolver(mapping or {}))


async def fetch_json(client: GuardedClient, url: str, **options: Any) -> tuple[int, Any]:
    async with client.request(options.pop("method", "GET"), url, **options) as response:
        body = await response.read()
        return response.status, json.loads(body) if body else None


# --- the tables ---

def _stub_mapping() -> dict[str, list[str]]:
    mapping = {}
    for case in URL_CASES:
        if "resolves_to" in case:
            mapping[check_url(case["url"]).host] = case["resolves_to"]
    return mapping


DENIED_URLS = [case for case in URL_CASES if not case["reason"].startswith("allow")]


@pytest.mark.parametrize("case", URL_CASES, ids=[case["id"] for case in URL_CASES])
async def test_check_matches_url_table(case: dict, dial_spy: DialSpy) -> None:
    async with make_client(mapping=_stub_mapping()) as client:
        result = await client.check(case["url"])
    assert result.reason == case["reason"]
    assert result.allowed is case["reason"].startswith("allow")
    assert dial_spy.attempts == []


@pytest.mark.parametrize("case", DENIED_URLS, ids=[case["id"] for case in DENIED_URLS])
async def test_denied_url_never_dialled(case: dict, dial_spy: DialSpy) -> None:
    async with make_client(mapping=_stub_mapping()) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", case["url"]):
                pass
    assert caught.value.reason == case["reason"]
    assert dial_spy.attempts == []


DENIED_ADDRESSES = [case for case in ADDRESS_CASES if not case["allowed"]]
ALLOWED_ADDRESSES = [case for case in ADDRESS_CASES if case["allowed"]]


@pytest.mark.parametrize("case", DENIED_ADDRESSES, ids=[case["id"] for case in DENIED_ADDRESSES])
async def test_denied_answer_never_dialled(case: dict, dial_spy: DialSpy) -> None:
    # Every denied address, returned by DNS for a name, on a port the spy would see.
    async with make_client(mapping={"target.test": [case["address"]]}) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", "http://target.test:8080/"):
                pass
    assert caught.value.reason == case["reason"]
    assert dial_spy.attempts == []


@pytest.mark.parametrize("case", ALLOWED_ADDRESSES, ids=[case["id"] for case in ALLOWED_ADDRESSES])
async def test_allowed_answer_reaches_dial(case: dict, dial_spy: DialSpy) -> None:
    # The spy rejects the connect itself, so the public-looking address is never contacted.
    # The test shows that the guard let exactly this address through to the dial.
    async with make_client(mapping={"public.test": [case["address"]]}) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", "http://public.test:8080/"):
                pass
    assert caught.value.reason == "connect_failed"
    dialled = [ipaddress.ip_address(host) for host, _ in dial_spy.attempts]
    assert dialled == [ipaddress.ip_address(case["address"])]


# --- explicit private allowances ---

async def test_allowed_literal_reaches_upstream(serve: Serve, dial_spy: DialSpy) -> None:
    port = await serve(echo_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        status, body = await fetch_json(client, f"http://127.0.0.1:{port}/echo?x=1")
    assert status == 200
    assert body["path_qs"] == "/echo?x=1"
    assert dial_spy.to_port(port) == ["127.0.0.1"]


async def test_allowance_is_per_port(serve: Serve, dial_spy: DialSpy) -> None:
    port = await serve(echo_app())
    other = await serve(echo_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://127.0.0.1:{other}/echo"):
                pass
    assert caught.value.reason == "deny_loopback"
    assert dial_spy.to_port(other) == []


async def test_allowance_is_per_host_spelling(serve: Serve, dial_spy: DialSpy) -> None:
    port = await serve(echo_app())
    async with make_client([f"localhost:{port}"], mapping={"localhost": ["127.0.0.1"]}) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://127.0.0.1:{port}/echo"):
                pass
        assert caught.value.reason == "deny_loopback"
        status, _ = await fetch_json(client, f"http://localhost:{port}/echo")
    assert status == 200
    assert dial_spy.to_port(port) == ["127.0.0.1"]


async def test_allowance_for_name_not_for_other_name(serve: Serve, dial_spy: DialSpy) -> None:
    port = await serve(echo_app())
    mapping = {"model.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"]}
    async with make_client([f"model.test:{port}"], mapping=mapping) as client:
        status, body = await fetch_json(client, f"http://model.test:{port}/echo")
        assert status == 200
        assert body["headers"]["Host"] == f"model.test:{port}"
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://evil.test:{port}/echo"):
                pass
    assert caught.value.reason == "deny_loopback"
    assert dial_spy.to_port(port) == ["127.0.0.1"]


@pytest.mark.parametrize("address,reason", [
    ("169.254.169.254", "deny_metadata"),
    ("0.0.0.0", "deny_unspecified"),
    ("224.0.0.1", "deny_multicast"),
    ("::ffff:169.254.169.254", "deny_metadata"),
])
async def test_allowance_never_lifts(address: str, reason: str, dial_spy: DialSpy) -> None:
    async with make_client(["model.test:8080"], mapping={"model.test": [address]}) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", "http://model.test:8080/"):
                pass
    assert caught.value.reason == reason
    assert dial_spy.attempts == []


async def test_allowance_use_logged(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    port = await serve(echo_app())
    caplog.set_level(logging.INFO, logger="keyside.guard")
    async with make_client([f"127.0.0.1:{port}"]) as client:
        await fetch_json(client, f"http://127.0.0.1:{port}/echo")
    assert f"private allowance used host=127.0.0.1 port={port} address=127.0.0.1" in caplog.text


async def test_check_reports_allowance(serve: Serve) -> None:
    async with make_client(["model.test:11434"], mapping={"model.test": ["127.0.0.1", "::1"]}) as client:
        result = await client.check("http://model.test:11434/api/tags")
    assert result.allowed is True
    assert result.reason == "allow_configured"
    assert [verdict.address for verdict in result.addresses] == ["127.0.0.1", "::1"]


# --- pinning and rebinding with a DNS server on loopback ---

@pytest.fixture
def dns() -> DnsServer:
    with DnsServer() as server:
        yield server


async def test_rebinding_after_check_denied(dns: DnsServer, dial_spy: DialSpy) -> None:
    dns.set_sequence("rebind.test", [["93.184.215.14"], ["127.0.0.1"]], ttl=0)
    async with make_client(resolver=DnsResolver([dns.address])) as client:
        first = await client.check("http://rebind.test:8080/")
        assert first.allowed is True
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", "http://rebind.test:8080/"):
                pass
    assert caught.value.reason == "deny_loopback"
    assert dial_spy.attempts == []


async def test_dial_uses_checked_answer(serve: Serve, dns: DnsServer, dial_spy: DialSpy) -> None:
    # With TTL 0 a second query would return the metadata address; the dial must use the
    # answer that was checked, so there is no second query for this request.
    port = await serve(echo_app())
    dns.set_sequence("pinned.test", [["127.0.0.1"], ["169.254.169.254"]], ttl=0)
    async with make_client([f"pinned.test:{port}"], resolver=DnsResolver([dns.address])) as client:
        status, _ = await fetch_json(client, f"http://pinned.test:{port}/echo")
        assert status == 200
        assert dns.query_count("pinned.test", "A") == 1
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://pinned.test:{port}/echo"):
                pass
    assert caught.value.reason == "deny_metadata"
    assert dial_spy.to_port(port) == ["127.0.0.1"]
    assert dial_spy.non_loopback() == []


async def test_validated_answer_cached_for_ttl(serve: Serve, dns: DnsServer) -> None:
    port = await serve(echo_app())
    dns.set("cached.test", "127.0.0.1", ttl=60)
    async with make_client([f"cached.test:{port}"], resolver=DnsResolver([dns.address])) as client:
        for _ in range(3):
            status, _ = await fetch_json(client, f"http://cached.test:{port}/echo")
            assert status == 200
    assert dns.query_count("cached.test", "A") == 1


async def test_zero_ttl_answer_not_cached(serve: Serve, dns: DnsServer) -> None:
    port = await serve(echo_app())
    dns.set("fresh.test", "127.0.0.1", ttl=0)
    async with make_client([f"fresh.test:{port}"], resolver=DnsResolver([dns.address])) as client:
        for _ in range(2):
            await fetch_json(client, f"http://fresh.test:{port}/echo")
    assert dns.query_count("fresh.test", "A") == 2


async def test_mixed_dns_answers_denied(dns: DnsServer, dial_spy: DialSpy) -> None:
    dns.set("mixed.test", "93.184.215.14", "::1", ttl=60)
    async with make_client(resolver=DnsResolver([dns.address])) as client:
        result = await client.check("http://mixed.test/")
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", "http://mixed.test/"):
                pass
    assert result.reason == "deny_loopback"
    assert {verdict.address for verdict in result.addresses} == {"93.184.215.14", "::1"}
    assert caught.value.reason == "deny_loopback"
    assert dial_spy.attempts == []


def _ipv6_loopback_usable() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_ipv4_preferred_then_ipv6(serve: Serve, dial_spy: DialSpy, require: Any) -> None:
    require(_ipv6_loopback_usable(), "IPv6 loopback (::1) is not available")
    port = await serve(echo_app(), host="::1")
    mapping = {"dual.test": ["::1", "127.0.0.1"]}
    async with make_client([f"dual.test:{port}"], mapping=mapping) as client:
        status, _ = await fetch_json(client, f"http://dual.test:{port}/echo")
    assert status == 200
    assert dial_spy.to_port(port) == ["127.0.0.1", "::1"]


# --- dial-time backstop ---

async def test_socket_factory_refuses_unvalidated_address() -> None:
    client = make_client()
    addr_info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80))
    with pytest.raises(GuardDenied) as caught:
        client.pinning.socket_factory(addr_info)
    assert caught.value.reason == "deny_loopback"
    await client.close()


async def test_socket_factory_accepts_public_address() -> None:
    client = make_client()
    addr_info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("93.184.215.14", 443))
    sock = client.pinning.socket_factory(addr_info)
    sock.close()
    await client.close()


# --- request basics ---

async def test_host_header_from_url_only(serve: Serve) -> None:
    port = await serve(echo_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        _, body = await fetch_json(client, f"http://127.0.0.1:{port}/echo",
                                   headers={"Host": "internal.example", "Connection": "upgrade", "X-Kept": "1"})
    assert body["headers"]["Host"] == f"127.0.0.1:{port}"
    assert body["headers"]["X-Kept"] == "1"
    assert body["headers"]["Accept-Encoding"] == "gzip, deflate"


async def test_post_body_sent(serve: Serve) -> None:
    port = await serve(echo_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        _, body = await fetch_json(client, f"http://127.0.0.1:{port}/echo", method="POST", data=b"payload")
    assert body["method"] == "POST"
    assert body["body"] == "payload"


async def test_streamed_request_body_sent(serve: Serve) -> None:
    port = await serve(echo_app())

    async def parts() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two"

    async with make_client([f"127.0.0.1:{port}"]) as client:
        _, body = await fetch_json(client, f"http://127.0.0.1:{port}/echo", method="PUT", data=parts())
    assert body["body"] == "one,two"


@pytest.mark.parametrize("method", ["CONNECT", "TRACE", "GET /x HTTP/1.1", ""])
async def test_method_not_allowed(method: str, dial_spy: DialSpy) -> None:
    async with make_client() as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request(method, "http://api.example.com/"):
                pass
    assert caught.value.reason == "method_not_allowed"
    assert dial_spy.attempts == []


async def test_header_line_break_rejected(dial_spy: DialSpy) -> None:
    async with make_client(mapping={"api.example.com": ["93.184.215.14"]}) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", "http://api.example.com/", headers={"X-A": "1\r\nHost: evil"}):
                pass
    assert caught.value.reason == "header_invalid"
    assert dial_spy.attempts == []


async def test_connect_refused_named(dial_spy: DialSpy) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    async with make_client([f"127.0.0.1:{port}"]) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://127.0.0.1:{port}/"):
                pass
    assert caught.value.reason == "connect_failed"
    assert dial_spy.to_port(port) == ["127.0.0.1"]


async def test_no_secret_or_query_in_logs(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    port = await serve(echo_app())
    caplog.set_level(logging.DEBUG)
    secret = "sk-test-4f9a8b7c6d5e"
    async with make_client([f"127.0.0.1:{port}"], mapping={"leak.test": ["127.0.0.1"]}) as client:
        await fetch_json(client, f"http://127.0.0.1:{port}/echo?api_key={secret}",
                         headers={"Authorization": f"Bearer {secret}"})
        target = f"http://127.0.0.1:{port}/echo?api_key={secret}"
        await fetch_json(client, f"http://127.0.0.1:{port}/redirect?to={target}",
                         headers={"Authorization": f"Bearer {secret}"})
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://leak.test:{port}/?api_key={secret}"):
                pass
    assert secret not in caplog.text
    assert secret not in str(caught.value)
    assert "api_key" not in caplog.text

"""The self-test's own socket fence: loopback passes, everything else fails before a packet.

Addresses named here are documentation addresses (RFC 5737 and RFC 3849) and `.invalid` names.
The fence under test rejects them before any connect or lookup. The suite's own fence and the
loopback-only namespace would stop them too.
"""

from __future__ import annotations

import socket

import pytest

from keyside.selftest.loopback import LoopbackFence, LoopbackViolation, is_loopback_address
from keyside.selftest.rawhttp import parse_reply, send_raw


@pytest.mark.parametrize("address", [("192.0.2.1", 80), ("198.51.100.7", 443), ("2001:db8::1", 80),
                                     ("::ffff:192.0.2.1", 80)], ids=str)
def test_fence_blocks_connect(address: tuple[str, int]) -> None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with LoopbackFence() as fence:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            with pytest.raises(LoopbackViolation):
                sock.connect(address)
    assert fence.violations == [f"connection to {address[0]!r}"]


def test_fence_blocks_udp_sendto() -> None:
    with LoopbackFence() as fence:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(LoopbackViolation):
                sock.sendto(b"x", ("192.0.2.53", 53))
    assert len(fence.violations) == 1


@pytest.mark.parametrize("lookup", [
    lambda: socket.getaddrinfo("selftest.invalid", 80),
    lambda: socket.gethostbyname("selftest.invalid"),
    lambda: socket.gethostbyname_ex("localhost"),
], ids=["getaddrinfo", "gethostbyname", "gethostbyname_ex_localhost"])
def test_fence_blocks_name_lookups(lookup: object) -> None:
    with LoopbackFence() as fence:
        with pytest.raises(LoopbackViolation):
            lookup()  # type: ignore[operator]
    assert fence.violations[0].startswith("OS resolver lookup of")


def test_fence_allows_loopback_and_numeric_lookup() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with LoopbackFence() as fence:
            socket.getaddrinfo("127.0.0.1", 80)
            with socket.create_connection(server.getsockname(), timeout=2):
                pass
    assert fence.violations == []


def test_fence_restores_socket_module() -> None:
    before = (socket.socket.connect, socket.getaddrinfo)
    with LoopbackFence():
        assert socket.socket.connect is not before[0]
    assert (socket.socket.connect, socket.getaddrinfo) == before


def test_fence_not_nested() -> None:
    with LoopbackFence():
        with pytest.raises(RuntimeError):
            LoopbackFence().__enter__()


@pytest.mark.parametrize("host,expected", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                           ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("localhost", False),
                                           ("192.0.2.1", False), (None, False)])
def test_is_loopback_address(host: object, expected: bool) -> None:
    assert is_loopback_address(host) is expected


async def test_raw_client_refuses_other_hosts() -> None:
    with pytest.raises(ValueError):
        await send_raw(80, b"GET / HTTP/1.1\r\n\r\n", host="192.0.2.1")


def test_chunked_reply_decoded() -> None:
    reply = parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
                        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")
    assert reply.status == 200
    assert reply.body == b"abcde"
    assert reply.header("x-a") == "b"


def test_reply_without_status_line() -> None:
    assert parse_reply(b"garbage").status == 0

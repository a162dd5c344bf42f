"""The test socket fence itself: loopback passes, anything else fails before a packet."""

from __future__ import annotations

import socket

import pytest

from fence import FenceViolation


@pytest.mark.parametrize("address", [
    ("10.0.0.1", 80),
    ("169.254.169.254", 80),
    ("192.168.1.1", 443),
    ("8.8.8.8", 53),
    ("::ffff:10.0.0.1", 80),
])
def test_fence_blocks_non_loopback(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        with pytest.raises(FenceViolation):
            sock.connect(address)


def test_fence_blocks_udp_to_remote_resolver():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(FenceViolation):
            sock.sendto(b"x", ("8.8.8.8", 53))


def test_fence_blocks_os_resolver_lookup():
    with pytest.raises(FenceViolation):
        socket.getaddrinfo("example.com", 80)


def test_fence_allows_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=2):
            pass

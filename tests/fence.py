"""A socket fence for the test process: only loopback and Unix sockets can be reached.

CI also runs the suite in a loopback-only network namespace, which covers child processes.
This fence is the in-process layer for machines without `unshare`: a connect, connect_ex or
sendto to any address outside 127.0.0.0/8 and ::1 raises FenceViolation before a packet is
sent, and host-name lookups through the OS resolver are allowed only for "localhost", so a test
cannot resolve a name through the machine's resolver by accident.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from keyside.selftest.loopback import is_loopback_address

ALLOWED_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


class FenceViolation(ConnectionRefusedError):
    """A test tried to reach something other than loopback."""


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family == socket.AF_UNIX:
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not is_loopback_address(host):
        raise FenceViolation(f"test socket fence: connection to {host!r} blocked (loopback only)")


_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex
_original_sendto = socket.socket.sendto
_original_getaddrinfo = socket.getaddrinfo
_original_gethostbyname = socket.gethostbyname
_original_gethostbyname_ex = socket.gethostbyname_ex


def _connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address)
    return _original_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address)
    return _original_connect_ex(self, address)


def _sendto(self: socket.socket, data: bytes, *args: Any) -> int:
    _check_address(self, args[-1])
    return _original_sendto(self, data, *args)


def _check_name(host: Any) -> None:
    if host is None:
        return
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host.lower() in ALLOWED_NAMES:
        return
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise FenceViolation(
            f"test socket fence: OS resolver lookup of {host!r} blocked; "
            "use a stub resolver or a DNS server on loopback"
        ) from None


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    _check_name(host)
    return _original_getaddrinfo(host, *args, **kwargs)


def _gethostbyname(host: str) -> str:
    _check_name(host)
    return _original_gethostbyname(host)


def _gethostbyname_ex(host: str) -> Any:
    _check_name(host)
    return _original_gethostbyname_ex(host)


def install() -> None:
    """Install the fence in this process (idempotent)."""
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _sendto  # type: ignore[method-assign]
    socket.getaddrinfo = _getaddrinfo
    socket.gethostbyname = _gethostbyname
    socket.gethostbyname_ex = _gethostbyname_ex

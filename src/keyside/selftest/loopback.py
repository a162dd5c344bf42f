"""A loopback-only socket fence for the self-test process.

The self-test promises to send nothing beyond loopback and to resolve no name through the OS
resolver. While `LoopbackFence` is active, a connect, connect_ex or sendto to an address outside
127.0.0.0/8 and ::1 raises LoopbackViolation before a packet leaves, and getaddrinfo,
gethostbyname and gethostbyname_ex accept only numeric addresses, which need no lookup. Every
attempt is recorded, so the self-test can report it as a failure even when a caller swallowed
the exception.

The fence covers this process only. The sidecar child has its own guard, and the self-test
gives it only loopback upstreams with IP-literal hosts.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from types import TracebackType
from typing import Any


class LoopbackViolation(ConnectionRefusedError):
    """An attempt to reach, or to look up, something other than a loopback address."""


def is_loopback_address(host: Any) -> bool:
    """Return True for a numeric loopback address (an IPv4-mapped one included)."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _is_numeric(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


class LoopbackFence:
    """Patch the socket module so that this process reaches loopback only; restore it on exit."""

    _active_lock = threading.Lock()

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._saved: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _record(self, attempt: str) -> LoopbackViolation:
        with self._lock:
            self.violations.append(attempt)
        return LoopbackViolation(f"keyside self-test: {attempt} blocked (loopback only)")

    def _check_peer(self, sock: socket.socket, address: Any) -> None:
        if sock.family == getattr(socket, "AF_UNIX", None):
            return
        host = address[0] if isinstance(address, tuple) and address else address
        if not is_loopback_address(host):
            raise self._record(f"connection to {host!r}")

    def _check_name(self, host: Any) -> None:
        if not _is_numeric(host):
            raise self._record(f"OS resolver lookup of {host!r}")

    def __enter__(self) -> LoopbackFence:
        if not LoopbackFence._active_lock.acquire(blocking=False):
            raise RuntimeError("a LoopbackFence is already active in this process")
        fence = self
        saved = self._saved = {
            "connect": socket.socket.connect,
            "connect_ex": socket.socket.connect_ex,
            "sendto": socket.socket.sendto,
            "getaddrinfo": socket.getaddrinfo,
            "gethostbyname": socket.gethostbyname,
            "gethostbyname_ex": socket.gethostbyname_ex,
        }

        def connect(sock: socket.socket, address: Any) -> None:
            fence._check_peer(sock, address)
            return saved["connect"](sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            fence._check_peer(sock, address)
            return saved["connect_ex"](sock, address)

        def sendto(sock: socket.socket, data: bytes, *args: Any) -> int:
            fence._check_peer(sock, args[-1])
            return saved["sendto"](sock, data, *args)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            fence._check_name(host)
            return saved["getaddrinfo"](host, *args, **kwargs)

        def gethostbyname(host: str) -> str:
            fence._check_name(host)
            return saved["gethostbyname"](host)

        def gethostbyname_ex(host: str) -> Any:
            fence._check_name(host)
            return saved["gethostbyname_ex"](host)

        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
        socket.socket.sendto = sendto  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo
        socket.gethostbyname = gethostbyname
        socket.gethostbyname_ex = gethostbyname_ex
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        saved = self._saved
        socket.socket.connect = saved["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = saved["connect_ex"]  # type: ignore[method-assign]
        socket.socket.sendto = saved["sendto"]  # type: ignore[method-assign]
        socket.getaddrinfo = saved["getaddrinfo"]
        socket.gethostbyname = saved["gethostbyname"]
        socket.gethostbyname_ex = saved["gethostbyname_ex"]
        LoopbackFence._active_lock.release()

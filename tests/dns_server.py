"""A small authoritative DNS server on 127.0.0.1 for tests, built on dnslib.

Tests set the records of a name and may change them between queries: `set_sequence` gives
each query of a type the next answer set, which is how DNS rebinding is played out. UDP and
TCP listen on the same port, so truncated answers can be retried over TCP. Usage:

    with DnsServer() as dns:
        dns.set("api.test", "203.0.113.7", "2001:db8::7", ttl=30)
        resolver = DnsResolver([dns.address])
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections import defaultdict
from typing import Any

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSError, DNSRecord
from dnslib.server import DNSHandler, DNSServer

# How often the serving threads check for shutdown, in seconds.
SHUTDOWN_POLL_S = 0.02
_FAMILIES = {"A": ipaddress.IPv4Address, "AAAA": ipaddress.IPv6Address}


def _key(name: str) -> str:
    return str(name).lower().rstrip(".")


class _QuietLogger:
    """A dnslib logger that prints nothing; tests read DnsServer.queries instead."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _Handler(DNSHandler):
    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        server: DnsServer = self.server.keyside_dns  # type: ignore[attr-defined]
        protocol = "tcp" if self.server.socket_type == socket.SOCK_STREAM else "udp"
        reply = server.answer(request, protocol)
        if reply is None:
            raise DNSError("silent name: no reply sent")
        return reply.pack()


class DnsServer:
    """An authoritative server whose zone tests edit while it runs."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self._lock = threading.Lock()
        self._sequences: dict[str, list[list[str]]] = {}
        self._ttls: dict[str, int] = {}
        self._cnames: dict[str, str] = {}
        self._rcodes: dict[str, int] = {}
        self._silent: set[str] = set()
        self._truncated: set[str] = set()
        self._counters: dict[tuple[str, str], int] = defaultdict(int)
        self.queries: list[tuple[str, str, str]] = []
        self._servers: list[DNSServer] = []

    # Zone edits.

    def set(self, name: str, *addresses: str, ttl: int = 60) -> None:
        """Answer `name` with these addresses (A for IPv4, AAAA for IPv6) on every query."""
        self.set_sequence(name, [list(addresses)], ttl=ttl)

    def set_sequence(self, name: str, answers: list[list[str]], ttl: int = 0) -> None:
        """Give the n-th query of each type answers[n]; the last set repeats."""
        for group in answers:
            for address in group:
                ipaddress.ip_address(address)
        with self._lock:
            key = _key(name)
            self._sequences[key] = [list(group) for group in answers]
            self._ttls[key] = ttl
            for qtype in _FAMILIES:
                self._counters[(key, qtype)] = 0

    def set_cname(self, name: str, target: str, ttl: int = 60) -> None:
        with self._lock:
            self._cnames[_key(name)] = _key(target)
            self._ttls.setdefault(_key(name), ttl)

    def set_rcode(self, name: str, rcode: str) -> None:
        """Answer `name` with an error code such as "SERVFAIL", "REFUSED" or "NXDOMAIN"."""
        with self._lock:
            self._rcodes[_key(name)] = getattr(RCODE, rcode)

    def set_silent(self, name: str) -> None:
        """Never reply to queries for `name`, so clients time out."""
        with self._lock:
            self._silent.add(_key(name))

    def set_truncated(self, name: str) -> None:
        """Reply over UDP with TC set and no records; TCP gets the full answer."""
        with self._lock:
            self._truncated.add(_key(name))

    def query_count(self, name: str, qtype: str | None = None) -> int:
        key = _key(name)
        with self._lock:
            return sum(1 for qname, kind, _ in self.queries if qname == key and qtype in (None, kind))

    # Serving.

    def answer(self, request: DNSRecord, protocol: str) -> DNSRecord | None:
        reply = request.reply()
        question = request.q
        qtype = QTYPE.get(question.qtype)
        name = _key(question.qname)
        with self._lock:
            self.queries.append((name, qtype, protocol))
            if name in self._silent:
                return None
            if name in self._rcodes:
                reply.header.rcode = self._rcodes[name]
                return reply
            if name in self._truncated and protocol == "udp":
                reply.header.tc = 1
                return reply
            owner = name
            for _ in range(10):
                if owner not in self._cnames:
                    break
                target = self._cnames[owner]
                reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(target), ttl=self._ttls.get(owner, 60)))
                owner = target
            if owner not in self._sequences:
                if name not in self._cnames:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            if qtype in _FAMILIES and owner in self._sequences:
                sequence = self._sequences[owner]
                index = min(self._counters[(owner, qtype)], len(sequence) - 1)
                self._counters[(owner, qtype)] += 1
                for address in sequence[index]:
                    parsed = ipaddress.ip_address(address)
                    if isinstance(parsed, _FAMILIES[qtype]):
                        rdata = A(address) if qtype == "A" else AAAA(address)
                        reply.add_answer(RR(owner, getattr(QTYPE, qtype), rdata=rdata, ttl=self._ttls[owner]))
        return reply

    def start(self) -> DnsServer:
        for _ in range(20):
            udp = DNSServer(None, address=self.host, port=0, logger=_QuietLogger(), handler=_Handler)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(None, address=self.host, port=port, tcp=True, logger=_QuietLogger(),
                                handler=_Handler)
            except OSError:
                udp.server.server_close()
                continue
            for server in (udp, tcp):
                server.server.keyside_dns = self  # type: ignore[attr-defined]
                # A short poll interval makes stop() return quickly between tests.
                thread = threading.Thread(target=server.server.serve_forever,
                                          kwargs={"poll_interval": SHUTDOWN_POLL_S}, daemon=True)
                thread.start()
            self._servers = [udp, tcp]
            self.port = port
            return self
        raise RuntimeError("no free port with both UDP and TCP available on loopback")

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()
        self._servers = []

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def nameserver(self) -> str:
        """The server as "ip:port", the form `keyside net check --nameserver` takes."""
        return f"{self.host}:{self.port}"

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

"""Name resolution for the guard: every A and AAAA answer for a host, with its TTL.

Resolvers only answer; the pinning layer classifies the answers and decides what is dialled.
All of them raise GuardDenied with `dns_no_answer` (no address), `dns_timeout` or `dns_failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from dnslib import CLASS, QTYPE, RCODE, DNSError, DNSQuestion, DNSRecord

from keyside.guard.addresses import IPAddress
from keyside.guard.errors import GuardDenied
from keyside.guard.urls import parse_host_port

logger = logging.getLogger(__name__)

# getaddrinfo(3) does not report TTLs, so answers from the OS resolver are not cached here;
# the OS (nscd, systemd-resolved) caches them by their real TTL.
SYSTEM_RESOLVER_TTL_S = 0.0
# Answers from a StaticResolver are fixed, but tests change them, so they live briefly.
STATIC_TTL_S = 60.0
# Per query and server. A working local or ISP resolver replies within milliseconds.
DNS_TIMEOUT_S = 3.0
# A UDP query is sent this many times to each server before the next server is tried.
DNS_ATTEMPTS = 2
# Longer CNAME chains than this are misconfigured or a loop.
MAX_CNAME_CHAIN = 8


@dataclass(frozen=True)
class ResolvedAddress:
    """One A or AAAA answer and how many seconds it may be cached."""

    ip: IPAddress
    ttl: float


class Resolver(Protocol):
    async def resolve(self, host: str) -> list[ResolvedAddress]:
        """Return every A and AAAA answer for `host`, or raise GuardDenied (`dns_*`)."""
        ...


def _no_answer(host: str) -> GuardDenied:
    return GuardDenied("dns_no_answer", f"Host {host!r} has no A or AAAA record.",
                       fix="Check the host name for typos.")


class SystemResolver:
    """The OS resolver through getaddrinfo(3), run in the event loop's thread pool."""

    def __init__(self, timeout_s: float = DNS_TIMEOUT_S * DNS_ATTEMPTS):
        self.timeout_s = timeout_s

    async def resolve(self, host: str) -> list[ResolvedAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM),
                self.timeout_s,
            )
        except TimeoutError:
            raise GuardDenied("dns_timeout", f"Resolving {host!r} timed out after {self.timeout_s:g} s.") from None
        except socket.gaierror as error:
            if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise _no_answer(host) from None
            raise GuardDenied("dns_failed", f"Resolving {host!r} failed: {error.strerror}.") from None
        addresses: list[ResolvedAddress] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(sockaddr[0])
            if isinstance(ip, ipaddress.IPv6Address) and len(sockaddr) > 3 and sockaddr[3]:
                ip = ipaddress.IPv6Address(f"{ip}%{sockaddr[3]}")
            answer = ResolvedAddress(ip, SYSTEM_RESOLVER_TTL_S)
            if answer not in addresses:
                addresses.append(answer)
        if not addresses:
            raise _no_answer(host)
        return addresses


class StaticResolver:
    """Answers from a mapping of host name to addresses, for tests and benchmarks.

    The mapping is read on every call, so a test can change an entry between requests.
    Values are address strings, IP address objects or ResolvedAddress items.
    """

    def __init__(self, mapping: Mapping[str, Iterable[str | IPAddress | ResolvedAddress]],
                 ttl: float = STATIC_TTL_S):
        self.mapping = mapping
        self.ttl = ttl

    async def resolve(self, host: str) -> list[ResolvedAddress]:
        entries = self.mapping.get(host.lower().rstrip("."))
        if not entries:
            raise _no_answer(host)
        addresses = []
        for entry in entries:
            if isinstance(entry, ResolvedAddress):
                addresses.append(entry)
            else:
                addresses.append(ResolvedAddress(ipaddress.ip_address(entry), self.ttl))
        return addresses


class DnsResolver:
    """A stub resolver that queries the given DNS servers directly over UDP, with TCP fallback.

    Used when the app names its nameservers, and by tests with a DNS server on loopback.
    Answers keep their TTL, so validated answers are cached no longer than the zone allows.
    """

    def __init__(self, nameservers: list[tuple[str, int]], *, timeout_s: float = DNS_TIMEOUT_S,
                 attempts: int = DNS_ATTEMPTS):
        if not nameservers:
            raise ValueError("DnsResolver needs at least one nameserver")
        self.nameservers = [(str(ipaddress.ip_address(host)), int(port)) for host, port in nameservers]
        self.timeout_s = timeout_s
        self.attempts = attempts

    @classmethod
    def from_strings(cls, nameservers: Iterable[str], **options: float) -> DnsResolver:
        """Build a resolver from "ip:port" strings; raises GuardDenied on a host name."""
        pairs = []
        for value in nameservers:
            host, port = parse_host_port(value)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise GuardDenied("invalid_host_port", f"Nameserver {value!r} is not an IP address and port.",
                                  fix='Write "127.0.0.1:5353" or "[::1]:53".') from None
            pairs.append((host, port))
        return cls(pairs, **options)  # type: ignore[arg-type]

    async def resolve(self, host: str) -> list[ResolvedAddress]:
        name = host.rstrip(".") + "."
        results = await asyncio.gather(self._query(name, "A"), self._query(name, "AAAA"),
                                       return_exceptions=True)
        addresses: list[ResolvedAddress] = []
        errors: list[GuardDenied] = []
        for result in results:
            if isinstance(result, GuardDenied):
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                addresses.extend(result)
        if addresses:
            if errors:
                # Safe to go on: only the answers received are dialled, and each is checked.
                logger.warning("dns query for one record type failed host=%s reason=%s", host, errors[0].reason)
            return addresses
        if errors:
            raise errors[0]
        raise _no_answer(host)

    async def _query(self, name: str, qtype: str) -> list[ResolvedAddress]:
        last_error: GuardDenied | None = None
        for server in self.nameservers:
            try:
                reply = await self._exchange(server, name, qtype)
            except GuardDenied as error:
                last_error = error
                continue
            rcode = reply.header.rcode
            if rcode == RCODE.NXDOMAIN:
                return []
            if rcode != RCODE.NOERROR:
                last_error = GuardDenied("dns_failed", f"DNS server {server[0]}:{server[1]} answered "
                                         f"{RCODE.get(rcode)} for {name.rstrip('.')!r}.")
                continue
            return _answers(reply, name, qtype)
        assert last_error is not None
        raise last_error

    async def _exchange(self, server: tuple[str, int], name: str, qtype: str) -> DNSRecord:
        query = DNSRecord(q=DNSQuestion(name, getattr(QTYPE, qtype), CLASS.IN))
        query.header.id = secrets.randbelow(65536)
        query.header.rd = 1
        packet = query.pack()
        for _ in range(self.attempts):
            try:
                data = await asyncio.wait_for(_udp_exchange(server, packet), self.timeout_s)
            except TimeoutError:
                continue
            except OSError as error:
                raise GuardDenied("dns_failed", f"DNS server {server[0]}:{server[1]} is unreachable: "
                                  f"{error.strerror or error}.") from None
            reply = _parse_reply(data, query, server)
            if reply is None:
                continue
            if reply.header.tc:
                return await self._tcp_exchange(server, query, packet)
            return reply
        raise GuardDenied("dns_timeout", f"DNS server {server[0]}:{server[1]} did not answer for "
                          f"{name.rstrip('.')!r} within {self.timeout_s:g} s ({self.attempts} attempts).")

    async def _tcp_exchange(self, server: tuple[str, int], query: DNSRecord, packet: bytes) -> DNSRecord:
        try:
            data = await asyncio.wait_for(_tcp_exchange(server, packet), self.timeout_s)
        except TimeoutError:
            raise GuardDenied("dns_timeout", f"DNS server {server[0]}:{server[1]} did not answer over TCP "
                              f"within {self.timeout_s:g} s.") from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise GuardDenied("dns_failed", f"DNS over TCP to {server[0]}:{server[1]} failed: {error}.") from None
        reply = _parse_reply(data, query, server)
        if reply is None:
            raise GuardDenied("dns_failed", f"DNS server {server[0]}:{server[1]} sent an invalid TCP reply.")
        return reply


def _parse_reply(data: bytes, query: DNSRecord, server: tuple[str, int]) -> DNSRecord | None:
    """Return the reply when it answers `query`, or None for a stray or malformed packet."""
    try:
        reply = DNSRecord.parse(data)
    except (DNSError, struct.error, ValueError, IndexError):
        logger.warning("dns malformed reply server=%s:%s", *server)
        return None
    if reply.header.id != query.header.id or not reply.header.qr or reply.questions != query.questions:
        logger.warning("dns reply does not match query server=%s:%s", *server)
        return None
    return reply


def _answers(reply: DNSRecord, name: str, qtype: str) -> list[ResolvedAddress]:
    """Collect the A or AAAA records for `name`, following the CNAME chain inside the reply."""
    expected_type = getattr(QTYPE, qtype)
    target = name.lower()
    for _ in range(MAX_CNAME_CHAIN + 1):
        records = [rr for rr in reply.rr if str(rr.rname).lower() == target]
        found = [ResolvedAddress(ipaddress.ip_address(str(rr.rdata)), float(rr.ttl))
                 for rr in records if rr.rtype == expected_type]
        if found:
            return found
        cnames = [rr for rr in records if rr.rtype == QTYPE.CNAME]
        if not cnames:
            return []
        target = str(cnames[0].rdata).lower()
    raise GuardDenied("dns_failed", f"CNAME chain for {name.rstrip('.')!r} is longer than {MAX_CNAME_CHAIN}.")


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _udp_exchange(server: tuple[str, int], packet: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_UdpExchange, remote_addr=server)
    try:
        transport.sendto(packet)
        return await protocol.reply
    finally:
        transport.close()


async def _tcp_exchange(server: tuple[str, int], packet: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*server)
    try:
        writer.write(struct.pack("!H", len(packet)) + packet)
        await writer.drain()
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

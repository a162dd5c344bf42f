"""Dial-time pinning: aiohttp dials only addresses this module resolved and validated.

An SSRF check that resolves a name, approves the answer and then lets the HTTP library
resolve it again loses to DNS rebinding: the second answer can be 127.0.0.1. Here the check
and the dial share one resolution. PinningResolver is aiohttp's resolver, so the address list
aiohttp connects to is exactly the validated list, and the socket factory refuses any other
address as a second line of defence. aiohttp keeps the host name for the Host header and for
TLS SNI and certificate checks.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from keyside.guard.addresses import ALLOW_CONFIGURED, Verdict, classify_address, describe_verdict
from keyside.guard.errors import GuardDenied
from keyside.guard.policy import LIFTABLE_REASONS, GuardPolicy
from keyside.guard.resolve import Resolver

logger = logging.getLogger(__name__)

# Validated answers are kept for their TTL, but never longer than this, so a policy or
# network change shows within minutes.
MAX_DNS_CACHE_TTL_S = 300.0
# Distinct (host, port) entries kept; the least recently used go first.
DNS_CACHE_MAX_ENTRIES = 1024

# The validated addresses of the request running in this task, keyed by (host, port). The
# client sets it right before aiohttp connects, so aiohttp's resolve call gets the very list
# that was checked, even when the TTL is 0 and a second query could return another answer.
_request_pins: contextvars.ContextVar[dict[tuple[str, int], tuple[Verdict, ...]] | None] = \
    contextvars.ContextVar("keyside_guard_request_pins", default=None)

# A cached answer: expiry, verdicts as resolved, verdicts in dial order, and the addresses that
# only an explicit allowance made dialable.
_CacheEntry = tuple[float, tuple[Verdict, ...], tuple[Verdict, ...], tuple[str, ...]]


class PinningResolver(AbstractResolver):
    """Resolves with a Resolver, classifies every answer under a policy, caches by TTL."""

    def __init__(self, resolver: Resolver, policy: GuardPolicy, *,
                 clock: Callable[[], float] = time.monotonic):
        self.resolver = resolver
        self.policy = policy
        self._clock = clock
        # Only answers whose every address is allowed are cached.
        self._cache: OrderedDict[tuple[str, int], _CacheEntry] = OrderedDict()
        # (address, port) pairs that an explicit allowance made dialable.
        self._lifted: set[tuple[str, int]] = set()
        # Requests that used an explicit allowance, per (host, port, address).
        self.allowance_uses: Counter[tuple[str, int, str]] = Counter()

    async def inspect(self, host: str, port: int) -> tuple[Verdict, ...]:
        """Resolve `host` and return a verdict for every answer, denied ones included.

        Raises GuardDenied only when resolution itself fails (`dns_*`).
        """
        key = (host, port)
        cached = self._cache.get(key)
        if cached is not None:
            if self._clock() < cached[0]:
                self._cache.move_to_end(key)
                return cached[1]
            del self._cache[key]

        literal = _literal(host)
        if literal is not None:
            # An IP literal needs no resolution, and its verdict depends only on the address and
            # the policy, so an allowed one is kept like a validated answer with the longest TTL.
            verdicts = (self.policy.decide(host, port, literal),)
            ttl = MAX_DNS_CACHE_TTL_S
        else:
            answers = await self.resolver.resolve(host)
            verdicts = tuple(dict.fromkeys(self.policy.decide(host, port, answer.ip) for answer in answers))
            ttl = min(min(answer.ttl for answer in answers), MAX_DNS_CACHE_TTL_S)
        if ttl > 0 and all(verdict.allowed for verdict in verdicts):
            configured = tuple(verdict.address for verdict in verdicts if verdict.reason == ALLOW_CONFIGURED)
            self._cache[key] = (self._clock() + ttl, verdicts, _dial_order(verdicts), configured)
            while len(self._cache) > DNS_CACHE_MAX_ENTRIES:
                self._cache.popitem(last=False)
        return verdicts

    async def lookup(self, host: str, port: int) -> tuple[Verdict, ...]:
        """Return the validated addresses for `host`:`port`, IPv4 first, or raise GuardDenied.

        Every answer must be allowed: one private answer among public ones denies the host,
        because which answer a later connection uses is not under the guard's control.
        """
        verdicts = await self.inspect(host, port)
        for verdict in verdicts:
            if not verdict.allowed:
                raise _denied(host, port, verdict)
        for verdict in verdicts:
            if verdict.reason == ALLOW_CONFIGURED:
                self._note_allowance_use(host, port, verdict.address)
        return _dial_order(verdicts)

    def cached_lookup(self, host: str, port: int) -> tuple[Verdict, ...] | None:
        """Return the result lookup() would give from a valid cached answer, or None on a miss.

        Unlike lookup(), this is not a coroutine. The client's request path calls it first,
        because almost every request finds its host in the cache.
        """
        key = (host, port)
        cached = self._cache.get(key)
        if cached is None or self._clock() >= cached[0]:
            return None
        self._cache.move_to_end(key)
        for address in cached[3]:
            self._note_allowance_use(host, port, address)
        return cached[2]

    def _note_allowance_use(self, host: str, port: int, address: str) -> None:
        # The first use of each allowed host, port and address is logged at INFO. Later uses are
        # counted and logged at DEBUG, because a line per request would cost more CPU time than
        # the request's own checks and flood the log of a busy local model server.
        self._lifted.add((address, port))
        key = (host, port, address)
        self.allowance_uses[key] += 1
        uses = self.allowance_uses[key]
        if uses == 1:
            logger.info("private allowance used host=%s port=%s address=%s", host, port, address)
        else:
            logger.debug("private allowance used host=%s port=%s address=%s uses=%d", host, port, address, uses)

    def pin(self, host: str, port: int, verdicts: tuple[Verdict, ...]) -> contextvars.Token[Any]:
        """Make aiohttp's next resolve of `host`:`port` in this task return `verdicts`."""
        return _request_pins.set({(host, port): verdicts})

    def unpin(self, token: contextvars.Token[Any]) -> None:
        _request_pins.reset(token)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """aiohttp's resolver hook: the pinned list for this request, else a fresh lookup."""
        pins = _request_pins.get()
        verdicts = pins.get((host, port)) if pins else None
        if verdicts is None:
            verdicts = await self.lookup(host, port)
        results: list[ResolveResult] = []
        for verdict in verdicts:
            address_family = socket.AF_INET6 if ":" in verdict.address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, address_family):
                continue
            results.append({"hostname": host, "host": verdict.address, "port": port,
                            "family": address_family, "proto": 0,
                            "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
        if not results:
            raise GuardDenied("dns_no_answer", f"Host {host}:{port} has no validated address of the "
                              "requested family.")
        return results

    async def close(self) -> None:
        self._cache.clear()

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """Create the socket for one connection attempt, after checking the address once more.

        aiohttp skips the resolver for IP-literal hosts, and this check also covers any path
        that reaches the connector without PinningResolver.
        """
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]:
            address = f"{address}%{sockaddr[3]}"
        port = int(sockaddr[1])
        verdict = classify_address(address)
        if not verdict.allowed and (verdict.address, port) not in self._lifted:
            logger.warning("connect rejected address=%s port=%s reason=%s", verdict.address, port, verdict.reason)
            raise GuardDenied(verdict.reason, f"Rejected a connection to {verdict.address} port {port}: "
                              f"{describe_verdict(verdict)}.")
        return socket.socket(family, type_, proto)

    def clear_cache(self) -> None:
        self._cache.clear()


def _dial_order(verdicts: tuple[Verdict, ...]) -> tuple[Verdict, ...]:
    """IPv4 addresses first, each family in answer order."""
    if len(verdicts) < 2:
        return verdicts
    return tuple(sorted(verdicts, key=lambda verdict: ":" in verdict.address))


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _denied(host: str, port: int, verdict: Verdict) -> GuardDenied:
    host_port = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if verdict.address == host:
        message = f"Address {host_port} is {describe_verdict(verdict)}."
    else:
        message = f"Host {host_port} resolves to {verdict.address}, {describe_verdict(verdict)}."
    if verdict.reason in LIFTABLE_REASONS:
        fix = (f"Only public addresses are reachable. If {host_port} is an intended local server, "
               f"allow it explicitly as a private host:port.")
    else:
        fix = "This kind of address is never reachable through keyside, even with an allowance."
    return GuardDenied(verdict.reason, message, fix=fix)

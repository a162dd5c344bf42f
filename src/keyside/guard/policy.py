"""Guard policy: the limits of every request and the explicit private host:port allowances."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from keyside.errors import KeysideError
from keyside.guard.addresses import ALLOW_CONFIGURED, IPAddress, Verdict, classify_address
from keyside.guard.urls import parse_host_port
from keyside.limits import validate_limit_fields

logger = logging.getLogger(__name__)

# A TCP and TLS handshake to a public API takes well under a second; 10 s covers slow links.
CONNECT_TIMEOUT_S = 10.0
# Model APIs can think for minutes before the first byte of a non-streaming reply.
READ_TIMEOUT_S = 120.0
# One deadline for headers and body over all redirect hops, so a trickling server cannot hold
# a slot for ever.
TOTAL_TIMEOUT_S = 600.0
# Decoded bytes: large enough for JSON APIs, feeds and base64 images, small enough for memory.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Browsers follow 20; API redirects are one or two hops (http->https, a trailing slash).
MAX_REDIRECTS = 5
# Requests in flight at once over all hosts; more wait in a first-in, first-out queue.
MAX_CONCURRENT = 32
# A browser opens 6 HTTP/1.1 connections per origin, but several windows, and SDK clients under
# `keyside exec` that send batches with asyncio.gather, share one upstream host.
MAX_CONCURRENT_PER_HOST = 16

# Deny reasons an explicit allowance may lift: unicast ranges where a local server can live.
# Metadata, multicast, broadcast, unspecified and reserved addresses are never reachable.
LIFTABLE_REASONS = frozenset({
    "deny_loopback",
    "deny_private",
    "deny_link_local",
    "deny_shared_cgnat",
    "deny_unique_local",
    "deny_site_local",
    "deny_benchmarking",
})


class InvalidPolicy(KeysideError):
    reason = "invalid_guard_policy"


@dataclass(frozen=True)
class GuardLimits:
    """Timeouts (seconds), size cap (decoded bytes), hop count and concurrency caps."""

    connect_timeout_s: float = CONNECT_TIMEOUT_S
    read_timeout_s: float = READ_TIMEOUT_S
    total_timeout_s: float = TOTAL_TIMEOUT_S
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_redirects: int = MAX_REDIRECTS
    max_concurrent: int = MAX_CONCURRENT
    max_concurrent_per_host: int = MAX_CONCURRENT_PER_HOST

    def __post_init__(self) -> None:
        validate_limit_fields(self, "Guard limit", InvalidPolicy, minimums={"max_redirects": 0})


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard lets through beyond public addresses, and the limits it enforces.

    `allow_private` contains (host, port) pairs, each a host name or IP literal and a port. A pair
    lets that exact host on that port reach a private or loopback address (a local model
    server, a test upstream); any other host that resolves there is still denied.
    """

    allow_private: frozenset[tuple[str, int]] = frozenset()
    limits: GuardLimits = field(default_factory=GuardLimits)

    def __post_init__(self) -> None:
        normalised = frozenset(_normalise_pair(pair) for pair in self.allow_private)
        object.__setattr__(self, "allow_private", normalised)

    @classmethod
    def from_strings(cls, allow_private: Iterable[str] = (), limits: GuardLimits | None = None) -> GuardPolicy:
        """Build a policy from "host:port" strings, as written in keyside.toml or on the CLI."""
        pairs = frozenset(parse_host_port(value) for value in allow_private)
        return cls(pairs, limits or GuardLimits())

    def decide(self, host: str, port: int, address: IPAddress) -> Verdict:
        """Classify `address`, reached through `host`:`port`, and apply the allowances."""
        verdict = classify_address(address)
        if verdict.allowed or (host, port) not in self.allow_private:
            return verdict
        if verdict.reason not in LIFTABLE_REASONS:
            return verdict
        return Verdict(True, ALLOW_CONFIGURED, verdict.address, verdict.embedded)


def _normalise_pair(pair: tuple[str, int]) -> tuple[str, int]:
    if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
            and isinstance(pair[1], int) and not isinstance(pair[1], bool)):
        raise InvalidPolicy(f"Private allowance {pair!r} is not a (host, port) pair.",
                            fix='Pass pairs such as ("127.0.0.1", 8080).')
    host, port = pair
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return parse_host_port(f"{bracketed}:{port}")

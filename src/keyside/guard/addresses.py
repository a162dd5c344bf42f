"""Address classification: is one IP address a public destination, and if not, why not.

The tables follow the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its
updates). Python's `ipaddress` flags are not used for the decision, because on Python 3.11
several special forms (IPv4-mapped, NAT64, 6to4, Teredo, 192.0.0.0/24 sub-blocks) report
`is_global` or miss `is_private` depending on the patch release.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_PUBLIC = "allow_public"
# An explicit private host:port allowance lifted a deny reason (see GuardPolicy).
ALLOW_CONFIGURED = "allow_configured"


@dataclass(frozen=True)
class Verdict:
    """The decision for one address: allowed or not, the reason name, and any embedded IPv4."""

    allowed: bool
    reason: str
    address: str
    embedded: str | None = None


def _v4(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


def _v6(cidr: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(cidr)


# Cloud instance-metadata endpoints. They hand out machine credentials, so they get their own
# reason, and an explicit private allowance never lifts it. Most sit inside a range denied anyway;
# 168.63.129.16 is a public address that reaches the host platform from every Azure VM.
METADATA_ADDRESSES: tuple[tuple[IPAddress, str], ...] = (
    (ipaddress.IPv4Address("169.254.169.254"), "AWS, Google Cloud, Azure, Oracle Cloud, OpenStack"),
    (ipaddress.IPv4Address("169.254.170.2"), "AWS ECS task metadata and credentials"),
    (ipaddress.IPv4Address("100.100.100.200"), "Alibaba Cloud"),
    (ipaddress.IPv4Address("168.63.129.16"), "Azure platform (WireServer)"),
    (ipaddress.IPv6Address("fd00:ec2::254"), "AWS instance metadata over IPv6"),
)
_METADATA = frozenset(address for address, _ in METADATA_ADDRESSES)

# First match wins, so a more specific block comes before the block that contains it.
IPV4_DENIED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_v4("0.0.0.0/32"), "deny_unspecified"),  # Linux connects 0.0.0.0 to the local host
    (_v4("0.0.0.0/8"), "deny_this_network"),
    (_v4("10.0.0.0/8"), "deny_private"),
    (_v4("100.64.0.0/10"), "deny_shared_cgnat"),
    (_v4("127.0.0.0/8"), "deny_loopback"),
    (_v4("169.254.0.0/16"), "deny_link_local"),
    (_v4("172.16.0.0/12"), "deny_private"),
    # NOTE: IANA marks 192.0.0.9 (PCP anycast) and 192.0.0.10 (TURN anycast) globally reachable,
    # but a PCP server is usually the user's own router, so the whole /24 stays denied.
    (_v4("192.0.0.0/24"), "deny_ietf_protocol"),
    (_v4("192.0.2.0/24"), "deny_documentation"),
    (_v4("192.88.99.0/24"), "deny_6to4_relay"),
    (_v4("192.168.0.0/16"), "deny_private"),
    (_v4("198.18.0.0/15"), "deny_benchmarking"),
    (_v4("198.51.100.0/24"), "deny_documentation"),
    (_v4("203.0.113.0/24"), "deny_documentation"),
    (_v4("224.0.0.0/4"), "deny_multicast"),
    (_v4("255.255.255.255/32"), "deny_broadcast"),
    (_v4("240.0.0.0/4"), "deny_reserved"),
)

IPV6_DENIED: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::/128"), "deny_unspecified"),
    (_v6("::1/128"), "deny_loopback"),
    (_v6("100::/64"), "deny_discard_only"),
    (_v6("2001:2::/48"), "deny_benchmarking"),
    # Teredo (2001::/32) is handled as an embedding form before this table is read.
    # NOTE: IANA marks a few sub-blocks globally reachable (AMT, AS112, ORCHIDv2, anycast PCP,
    # TURN and DNS-SD SRP). None serves an HTTP API, and the anycast ones reach local servers.
    (_v6("2001::/23"), "deny_ietf_protocol"),
    (_v6("2001:db8::/32"), "deny_documentation"),
    (_v6("3fff::/20"), "deny_documentation"),
    (_v6("fc00::/7"), "deny_unique_local"),
    (_v6("fe80::/10"), "deny_link_local"),
    (_v6("fec0::/10"), "deny_site_local"),
    (_v6("ff00::/8"), "deny_multicast"),
)
# Only 2000::/3 is allocated for global unicast; everything else not handled above is reserved.
IPV6_GLOBAL_UNICAST = _v6("2000::/3")

# IPv6 forms that carry an IPv4 address. The packet reaches (or is translated to) that IPv4
# address, so the embedded address must pass the IPv4 table too.
IPV4_MAPPED = _v6("::ffff:0:0/96")
IPV4_COMPATIBLE = _v6("::/96")  # deprecated by RFC 4291; never a valid destination
NAT64_WELL_KNOWN = _v6("64:ff9b::/96")
NAT64_LOCAL_USE = _v6("64:ff9b:1::/48")  # RFC 8215: operator-local, never globally reachable
SIX_TO_FOUR = _v6("2002::/16")
TEREDO = _v6("2001::/32")


def _integer_ranges(table: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]
                    ) -> tuple[tuple[int, int, str], ...]:
    # Integer bounds make a lookup a few comparisons instead of ipaddress containment calls.
    return tuple((int(network.network_address), int(network.broadcast_address), reason)
                 for network, reason in table)


_IPV4_RANGES = _integer_ranges(IPV4_DENIED)
_IPV6_RANGES = _integer_ranges(IPV6_DENIED)


def classify_address(address: str | IPAddress) -> Verdict:
    """Classify one address against the special-purpose tables.

    Raises ValueError when `address` is a string that is not an IP address. A scoped IPv6
    address (with a `%zone`) is denied with `deny_zone_id`, because the zone picks a local
    interface.
    """
    if isinstance(address, str):
        address = ipaddress.ip_address(address.strip("[]"))
    if isinstance(address, ipaddress.IPv4Address):
        return _classify_v4(address)
    if address.scope_id is not None:
        return Verdict(False, "deny_zone_id", str(address))
    return _classify_v6(address)


def _classify_v4(address: ipaddress.IPv4Address) -> Verdict:
    text = str(address)
    if address in _METADATA:
        return Verdict(False, "deny_metadata", text)
    value = int(address)
    for low, high, reason in _IPV4_RANGES:
        if low <= value <= high:
            return Verdict(False, reason, text)
    return Verdict(True, ALLOW_PUBLIC, text)


def _classify_v6(address: ipaddress.IPv6Address) -> Verdict:
    text = str(address)
    if address in _METADATA:
        return Verdict(False, "deny_metadata", text)

    embedded = _embedded_ipv4(address)
    if embedded is not None:
        form_reason, inner = embedded
        for inner_address in inner:
            inner_verdict = _classify_v4(inner_address)
            if not inner_verdict.allowed:
                return Verdict(False, inner_verdict.reason, text, str(inner_address))
        # The last embedded address is the destination (Teredo lists the server first).
        destination = str(inner[-1])
        if form_reason is not None:
            return Verdict(False, form_reason, text, destination)
        return Verdict(True, ALLOW_PUBLIC, text, destination)

    value = int(address)
    for low, high, reason in _IPV6_RANGES:
        if low <= value <= high:
            return Verdict(False, reason, text)
    if not _within(value, IPV6_GLOBAL_UNICAST):
        return Verdict(False, "deny_reserved", text)
    return Verdict(True, ALLOW_PUBLIC, text)


def _within(value: int, network: ipaddress.IPv6Network) -> bool:
    return int(network.network_address) <= value <= int(network.broadcast_address)


def _embedded_ipv4(
    address: ipaddress.IPv6Address,
) -> tuple[str | None, tuple[ipaddress.IPv4Address, ...]] | None:
    """Return (deny reason of the form itself or None, embedded IPv4 addresses), or None."""
    value = int(address)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if _within(value, IPV4_MAPPED) or _within(value, NAT64_WELL_KNOWN):
        return None, (low32,)
    if _within(value, NAT64_LOCAL_USE):
        # The operator chooses the prefix length; the /96 layout is the one shown.
        return "deny_nat64_local", (low32,)
    if _within(value, SIX_TO_FOUR):
        return None, (ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF),)
    if _within(value, TEREDO):
        server = ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~value & 0xFFFFFFFF)
        return None, (server, client)
    # ::/96 without :: and ::1, which have their own reasons.
    if _within(value, IPV4_COMPATIBLE) and value > 1:
        return "deny_ipv4_compatible", (low32,)
    return None


# Plain-language names of the address classes, for error messages and `keyside net check`.
REASON_DESCRIPTIONS = {
    ALLOW_PUBLIC: "a public address",
    ALLOW_CONFIGURED: "a private address allowed explicitly for this host and port",
    "deny_unspecified": "the unspecified address",
    "deny_this_network": "a 'this network' address (0.0.0.0/8)",
    "deny_private": "a private-network address",
    "deny_shared_cgnat": "a shared carrier-grade NAT address (100.64.0.0/10)",
    "deny_loopback": "a loopback address",
    "deny_link_local": "a link-local address",
    "deny_metadata": "a cloud instance-metadata address",
    "deny_ietf_protocol": "an IETF protocol assignment",
    "deny_documentation": "a documentation address",
    "deny_6to4_relay": "the deprecated 6to4 relay anycast block",
    "deny_benchmarking": "a benchmarking address",
    "deny_multicast": "a multicast address",
    "deny_broadcast": "the broadcast address",
    "deny_reserved": "a reserved address",
    "deny_discard_only": "a discard-only address",
    "deny_unique_local": "an IPv6 unique local address",
    "deny_site_local": "a deprecated IPv6 site-local address",
    "deny_ipv4_compatible": "a deprecated IPv4-compatible IPv6 address",
    "deny_nat64_local": "a local-use NAT64 address",
    "deny_zone_id": "a scoped IPv6 address with a zone id",
}


def describe_verdict(verdict: Verdict) -> str:
    """Return the address class in words with the reason, e.g. "a loopback address (deny_loopback)".

    An embedded IPv4 address is named, e.g. "... (embedded IPv4 127.0.0.1, deny_loopback)".
    """
    description = REASON_DESCRIPTIONS.get(verdict.reason, verdict.reason)
    if verdict.embedded:
        return f"{description} (embedded IPv4 {verdict.embedded}, {verdict.reason})"
    return f"{description} ({verdict.reason})"

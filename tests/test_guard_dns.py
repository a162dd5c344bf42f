"""Resolvers and the validated-answer cache, with tests/dns_server.py on loopback."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from dns_server import DnsServer
from keyside.guard import DnsResolver, GuardDenied, GuardPolicy, ResolvedAddress, StaticResolver, SystemResolver
from keyside.guard.pinning import MAX_DNS_CACHE_TTL_S, PinningResolver

FAST = {"timeout_s": 0.3, "attempts": 1}


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def _ips(answers: list[ResolvedAddress]) -> list[str]:
    return [str(answer.ip) for answer in answers]


async def test_resolver_returns_a_and_aaaa(dns: DnsServer) -> None:
    dns.set("api.test", "198.51.100.7", "2001:db8::7", ttl=42)
    answers = await DnsResolver([dns.address], **FAST).resolve("api.test")
    assert sorted(_ips(answers)) == ["198.51.100.7", "2001:db8::7"]
    assert {answer.ttl for answer in answers} == {42.0}
    assert dns.query_count("api.test", "A") == 1
    assert dns.query_count("api.test", "AAAA") == 1


async def test_trailing_dot_and_case(dns: DnsServer) -> None:
    dns.set("api.test", "198.51.100.7")
    answers = await DnsResolver([dns.address], **FAST).resolve("API.test.")
    assert _ips(answers) == ["198.51.100.7"]


async def test_cname_chain_followed(dns: DnsServer) -> None:
    dns.set_cname("www.test", "edge.test")
    dns.set_cname("edge.test", "origin.test")
    dns.set("origin.test", "198.51.100.9", ttl=30)
    answers = await DnsResolver([dns.address], **FAST).resolve("www.test")
    assert _ips(answers) == ["198.51.100.9"]


async def test_nxdomain_is_no_answer(dns: DnsServer) -> None:
    with pytest.raises(GuardDenied) as caught:
        await DnsResolver([dns.address], **FAST).resolve("missing.test")
    assert caught.value.reason == "dns_no_answer"


async def test_servfail_is_failure(dns: DnsServer) -> None:
    dns.set_rcode("broken.test", "SERVFAIL")
    with pytest.raises(GuardDenied) as caught:
        await DnsResolver([dns.address], **FAST).resolve("broken.test")
    assert caught.value.reason == "dns_failed"
    assert "SERVFAIL" in str(caught.value)


async def test_silent_server_times_out(dns: DnsServer) -> None:
    dns.set_silent("slow.test")
    with pytest.raises(GuardDenied) as caught:
        await DnsResolver([dns.address], **FAST).resolve("slow.test")
    assert caught.value.reason == "dns_timeout"


async def test_truncated_reply_retried_over_tcp(dns: DnsServer) -> None:
    dns.set_truncated("big.test")
    dns.set("big.test", "198.51.100.10", "198.51.100.11")
    answers = await DnsResolver([dns.address], **FAST).resolve("big.test")
    assert sorted(_ips(answers)) == ["198.51.100.10", "198.51.100.11"]
    assert ("big.test", "A", "tcp") in dns.queries


async def test_second_nameserver_used(dns: DnsServer) -> None:
    with DnsServer() as silent:
        silent.set_silent("api.test")
        dns.set("api.test", "198.51.100.7")
        answers = await DnsResolver([silent.address, dns.address], **FAST).resolve("api.test")
    assert _ips(answers) == ["198.51.100.7"]


async def test_only_aaaa_records(dns: DnsServer) -> None:
    dns.set("six.test", "2001:db8::6")
    answers = await DnsResolver([dns.address], **FAST).resolve("six.test")
    assert _ips(answers) == ["2001:db8::6"]


def test_nameserver_strings_parsed() -> None:
    resolver = DnsResolver.from_strings(["127.0.0.1:5353", "[::1]:53"])
    assert resolver.nameservers == [("127.0.0.1", 5353), ("::1", 53)]


@pytest.mark.parametrize("value", ["dns.example:53", "127.0.0.1", "127.0.0.1:0"])
def test_nameserver_string_rejected(value: str) -> None:
    with pytest.raises(GuardDenied) as caught:
        DnsResolver.from_strings([value])
    assert caught.value.reason == "invalid_host_port"


async def test_static_resolver_reads_mapping_live() -> None:
    mapping = {"a.test": ["198.51.100.1"]}
    resolver = StaticResolver(mapping, ttl=5)
    assert _ips(await resolver.resolve("A.test.")) == ["198.51.100.1"]
    mapping["a.test"] = ["::1"]
    assert _ips(await resolver.resolve("a.test")) == ["::1"]
    with pytest.raises(GuardDenied) as caught:
        await resolver.resolve("b.test")
    assert caught.value.reason == "dns_no_answer"


async def test_system_resolver_localhost() -> None:
    # "localhost" is the one name the test fence lets through to the OS resolver.
    answers = await SystemResolver().resolve("localhost")
    assert answers
    assert all(answer.ip.is_loopback for answer in answers)
    assert all(answer.ttl == 0 for answer in answers)


# --- PinningResolver: validation and the TTL cache ---

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pinning(dns: DnsServer, clock: FakeClock, allow: tuple[str, ...] = ()) -> PinningResolver:
    return PinningResolver(DnsResolver([dns.address], **FAST), GuardPolicy.from_strings(allow), clock=clock)


async def test_cache_kept_until_ttl(dns: DnsServer) -> None:
    clock = FakeClock()
    dns.set_sequence("api.test", [["93.184.215.14"], ["127.0.0.1"]], ttl=30)
    pinning = _pinning(dns, clock)
    first = await pinning.lookup("api.test", 443)
    clock.now += 29
    again = await pinning.lookup("api.test", 443)
    assert again == first
    clock.now += 2
    with pytest.raises(GuardDenied) as caught:
        await pinning.lookup("api.test", 443)
    assert caught.value.reason == "deny_loopback"
    assert dns.query_count("api.test", "A") == 2


async def test_cache_capped_below_long_ttl(dns: DnsServer) -> None:
    clock = FakeClock()
    dns.set("api.test", "93.184.215.14", ttl=86400)
    pinning = _pinning(dns, clock)
    await pinning.lookup("api.test", 443)
    clock.now += MAX_DNS_CACHE_TTL_S + 1
    await pinning.lookup("api.test", 443)
    assert dns.query_count("api.test", "A") == 2


async def test_denied_answer_not_cached(dns: DnsServer) -> None:
    clock = FakeClock()
    dns.set_sequence("flip.test", [["10.0.0.1"], ["93.184.215.14"]], ttl=300)
    pinning = _pinning(dns, clock)
    with pytest.raises(GuardDenied):
        await pinning.lookup("flip.test", 80)
    verdicts = await pinning.lookup("flip.test", 80)
    assert [verdict.address for verdict in verdicts] == ["93.184.215.14"]


async def test_lookup_orders_ipv4_first(dns: DnsServer) -> None:
    dns.set("dual.test", "2606:4700::1", "93.184.215.14")
    verdicts = await _pinning(dns, FakeClock()).lookup("dual.test", 443)
    assert [verdict.address for verdict in verdicts] == ["93.184.215.14", "2606:4700::1"]


async def test_aiohttp_resolve_hook(dns: DnsServer) -> None:
    dns.set("dual.test", "2606:4700::1", "93.184.215.14")
    results = await _pinning(dns, FakeClock()).resolve("dual.test", 443, family=0)
    assert [(result["host"], result["port"]) for result in results] == [("93.184.215.14", 443),
                                                                         ("2606:4700::1", 443)]
    assert all(ipaddress.ip_address(result["host"]) for result in results)


async def test_aiohttp_resolve_hook_denies(dns: DnsServer) -> None:
    dns.set("bad.test", "169.254.169.254")
    with pytest.raises(GuardDenied) as caught:
        await _pinning(dns, FakeClock()).resolve("bad.test", 80, family=0)
    assert caught.value.reason == "deny_metadata"


async def test_cached_lookup_matches_lookup_until_expiry(dns: DnsServer) -> None:
    clock = FakeClock()
    dns.set("dual.test", "2606:4700::1", "93.184.215.14", ttl=30)
    pinning = _pinning(dns, clock)
    assert pinning.cached_lookup("dual.test", 443) is None  # nothing resolved yet
    first = await pinning.lookup("dual.test", 443)
    assert pinning.cached_lookup("dual.test", 443) == first
    assert [verdict.address for verdict in first] == ["93.184.215.14", "2606:4700::1"]
    clock.now += 31
    assert pinning.cached_lookup("dual.test", 443) is None
    assert pinning.cached_lookup("dual.test", 80) is None  # another port is another entry
    assert dns.query_count("dual.test", "A") == 1


async def test_cached_lookup_counts_allowance_uses(dns: DnsServer) -> None:
    dns.set("model.lan", "192.168.1.20", ttl=30)
    pinning = _pinning(dns, FakeClock(), allow=("model.lan:8080",))
    await pinning.lookup("model.lan", 8080)
    pinning.cached_lookup("model.lan", 8080)
    pinning.cached_lookup("model.lan", 8080)
    assert pinning.allowance_uses[("model.lan", 8080, "192.168.1.20")] == 3


async def test_cached_lookup_skips_denied_answer(dns: DnsServer) -> None:
    dns.set("meta.test", "169.254.169.254", ttl=300)
    pinning = _pinning(dns, FakeClock())
    with pytest.raises(GuardDenied):
        await pinning.lookup("meta.test", 80)
    assert pinning.cached_lookup("meta.test", 80) is None

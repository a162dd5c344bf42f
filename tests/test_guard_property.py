"""Property tests: whatever DNS returns and however a host is spelled, no denied address is dialled.

A resolver returns random answer sets (biased towards the special-purpose ranges and IPv6
forms that embed them); DialSpy records every connect attempt and refuses it before the real
connect, so allowed public-looking addresses are never contacted either.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyside.guard import (
    GuardDenied,
    GuardedClient,
    GuardPolicy,
    ResolvedAddress,
    StaticResolver,
    check_url,
    classify_address,
)
from keyside.guard.addresses import IPV4_DENIED, IPV6_DENIED, METADATA_ADDRESSES
from test_guard_client import TEST_LIMITS, DialSpy

SPECIAL_NETWORKS = [network for network, _ in IPV4_DENIED + IPV6_DENIED]


@st.composite
def address_in_network(draw: st.DrawFn) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    network = draw(st.sampled_from(SPECIAL_NETWORKS))
    offset = draw(st.integers(0, network.num_addresses - 1))
    return network.network_address + offset


@st.composite
def embedded_form(draw: st.DrawFn) -> ipaddress.IPv6Address:
    inner = int(draw(st.one_of(st.ip_addresses(v=4), address_in_network().filter(
        lambda address: address.version == 4))))
    prefix = draw(st.sampled_from(["mapped", "nat64", "nat64-local", "6to4", "teredo", "compatible"]))
    value = {
        "mapped": 0xFFFF << 32 | inner,
        "nat64": int(ipaddress.IPv6Address("64:ff9b::")) | inner,
        "nat64-local": int(ipaddress.IPv6Address("64:ff9b:1::")) | inner,
        "6to4": 0x2002 << 112 | inner << 80,
        "teredo": 0x20010000 << 96 | inner << 64 | (~inner & 0xFFFFFFFF),
        "compatible": inner,
    }[prefix]
    return ipaddress.IPv6Address(value)


any_address = st.one_of(
    st.ip_addresses(),
    address_in_network(),
    embedded_form(),
    st.sampled_from([address for address, _ in METADATA_ADDRESSES]),
)


async def _attempt(client: GuardedClient, url: str) -> GuardDenied | None:
    try:
        async with client.request("GET", url):
            return None
    except GuardDenied as error:
        return error


def _run(policy: GuardPolicy, resolver: Any, url: str) -> tuple[GuardDenied | None, list[tuple[str, int]]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = DialSpy(monkeypatch)

        async def go() -> GuardDenied | None:
            async with GuardedClient(policy, resolver) as client:
                return await _attempt(client, url)

        error = asyncio.run(go())
    return error, spy.attempts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_address, min_size=1, max_size=4))
def test_no_denied_answer_dialled(answers: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
    resolver = StaticResolver({"random.test": answers})
    error, attempts = _run(GuardPolicy(limits=TEST_LIMITS), resolver, "http://random.test:8080/")
    verdicts = [classify_address(answer) for answer in answers]
    denied = [verdict for verdict in verdicts if not verdict.allowed]

    for host, _ in attempts:
        assert classify_address(host).allowed, f"dialled denied address {host}"
    if denied:
        assert attempts == []
        assert error is not None
        assert error.reason in {verdict.reason for verdict in denied}
    else:
        assert error is not None
        assert error.reason == "connect_failed"
        assert {ipaddress.ip_address(host) for host, _ in attempts} <= set(answers)
        assert attempts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_address, min_size=1, max_size=3))
def test_allowance_lifts_only_local_classes(answers: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
    # The allowed host may reach private and loopback answers, but never metadata, multicast
    # and the other classes no local server lives in.
    policy = GuardPolicy(frozenset({("model.test", 8080)}), TEST_LIMITS)
    error, attempts = _run(policy, StaticResolver({"model.test": answers}), "http://model.test:8080/")
    decided = [policy.decide("model.test", 8080, answer) for answer in answers]
    for host, _ in attempts:
        verdict = policy.decide("model.test", 8080, ipaddress.ip_address(host))
        assert verdict.allowed
        assert classify_address(host).reason not in {"deny_metadata", "deny_multicast", "deny_unspecified",
                                                      "deny_broadcast", "deny_reserved"}
    if not all(verdict.allowed for verdict in decided):
        assert attempts == []
        assert error is not None


class AnyNameResolver:
    """Resolves every name to one public-looking address, so only literal hosts can be denied."""

    async def resolve(self, host: str) -> list[ResolvedAddress]:
        return [ResolvedAddress(ipaddress.IPv4Address("93.184.215.14"), 60.0)]


host_text = st.text(alphabet="0123456789xXabcdef.\uff10\uff11\uff17\u3002[]:%", min_size=1, max_size=24)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host_text)
def test_host_spelling_never_dials_denied(host: str) -> None:
    url = f"http://{host}:8080/"
    error, attempts = _run(GuardPolicy(limits=TEST_LIMITS), AnyNameResolver(), url)
    for dialled, _ in attempts:
        assert classify_address(dialled).allowed, f"{host!r} dialled {dialled}"
    try:
        checked = check_url(url)
    except GuardDenied:
        assert attempts == []
        return
    if checked.address is not None and not classify_address(checked.address).allowed:
        assert attempts == []
        assert error is not None
        assert error.reason == classify_address(checked.address).reason

"""Address classification: the table in tests/data/ssrf_addresses.toml and range coverage."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyside.guard import REASON_DESCRIPTIONS, classify_address, describe_verdict
from keyside.guard.addresses import IPV4_DENIED, IPV6_DENIED, METADATA_ADDRESSES

CASES = tomllib.loads((Path(__file__).parent / "data" / "ssrf_addresses.toml").read_text())["case"]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_address_table(case: dict) -> None:
    verdict = classify_address(case["address"])
    assert verdict.allowed is case["allowed"]
    assert verdict.reason == case["reason"]
    assert verdict.embedded == case.get("embedded")


def test_table_ids_unique() -> None:
    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("network,reason", [*IPV4_DENIED, *IPV6_DENIED], ids=str)
def test_every_range_has_a_case(network: ipaddress.IPv4Network | ipaddress.IPv6Network, reason: str) -> None:
    covered = [case["id"] for case in CASES
               if "%" not in case["address"] and ipaddress.ip_address(case["address"]) in network]
    assert covered, f"no case in ssrf_addresses.toml falls in {network} ({reason})"


@pytest.mark.parametrize("address", [address for address, _ in METADATA_ADDRESSES], ids=str)
def test_every_metadata_address_has_a_case(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert any(ipaddress.ip_address(case["address"]) == address for case in CASES if "%" not in case["address"])


def test_every_reason_is_described() -> None:
    for case in CASES:
        assert case["reason"] in REASON_DESCRIPTIONS


def test_address_objects_accepted() -> None:
    assert classify_address(ipaddress.IPv4Address("127.0.0.1")).reason == "deny_loopback"
    assert classify_address(ipaddress.IPv6Address("::1")).reason == "deny_loopback"


def test_bracketed_string_accepted() -> None:
    assert classify_address("[::1]").reason == "deny_loopback"


def test_invalid_string_raises() -> None:
    with pytest.raises(ValueError):
        classify_address("localhost")


def test_describe_names_embedded_address() -> None:
    text = describe_verdict(classify_address("::ffff:127.0.0.1"))
    assert "127.0.0.1" in text
    assert "deny_loopback" in text


# Python's own flags disagree with the registries for some of these on 3.11; the guard must not.
PYTHON_FLAG_TRAPS = [
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::10.0.0.1",
    "2002:a00:1::",
    "2001:0:a00:1::a247:2af1",
    "192.0.0.9",
    "100.64.0.1",
]


@pytest.mark.parametrize("address", PYTHON_FLAG_TRAPS)
def test_special_forms_denied_whatever_python_flags(address: str) -> None:
    assert classify_address(address).allowed is False


ipv4_addresses = st.ip_addresses(v=4)


@given(ipv4_addresses)
def test_mapped_form_follows_ipv4_verdict(address: ipaddress.IPv4Address) -> None:
    plain = classify_address(address)
    mapped = classify_address(ipaddress.IPv6Address(f"::ffff:{address}"))
    assert mapped.allowed == plain.allowed
    assert mapped.reason == plain.reason
    assert mapped.embedded == str(address)


@given(ipv4_addresses)
def test_nat64_and_6to4_never_allow_denied_ipv4(address: ipaddress.IPv4Address) -> None:
    plain = classify_address(address)
    nat64 = classify_address(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address)))
    six_to_four = classify_address(ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80)))
    if not plain.allowed:
        assert nat64.allowed is False
        assert six_to_four.allowed is False
        assert nat64.reason == plain.reason
        assert six_to_four.reason == plain.reason


@given(ipv4_addresses, ipv4_addresses)
def test_teredo_denied_when_either_ipv4_denied(server: ipaddress.IPv4Address,
                                               client: ipaddress.IPv4Address) -> None:
    value = (0x20010000 << 96) | (int(server) << 64) | (~int(client) & 0xFFFFFFFF)
    verdict = classify_address(ipaddress.IPv6Address(value))
    either_denied = not classify_address(server).allowed or not classify_address(client).allowed
    assert verdict.allowed is not either_denied


@given(st.ip_addresses(v=6))
def test_ipv6_allowed_only_in_global_unicast(address: ipaddress.IPv6Address) -> None:
    verdict = classify_address(address)
    if verdict.allowed and verdict.embedded is None:
        assert address in ipaddress.IPv6Network("2000::/3")

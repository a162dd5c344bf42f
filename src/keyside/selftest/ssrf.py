"""SSRF classes: the guard's case tables, checked the way `keyside net check` checks a URL.

Every URL goes through `GuardedClient.check`: the URL check, resolution and the classification
of every answer. The resolver is a StaticResolver that returns the addresses of the case table, so
no DNS query is sent and no connection is opened. The private, metadata and public addresses in
the tables are only named.
"""

from __future__ import annotations

from typing import Any

from keyside.guard import GuardDenied, GuardedClient, GuardPolicy, StaticResolver, check_url, classify_address
from keyside.selftest import corpus
from keyside.selftest.probes import run_case
from keyside.selftest.results import ClassResult


def _stub_mapping(case: dict[str, Any]) -> dict[str, list[str]]:
    """Return the stub resolver's mapping: the case's host to its addresses, or nothing for no addresses."""
    if "resolves_to" not in case:
        return {}
    try:
        host = check_url(case["url"]).host
    except GuardDenied:
        return {}
    return {host: list(case["resolves_to"])}


async def _check_case(policy: GuardPolicy, case: dict[str, Any]) -> list[str]:
    async with GuardedClient(policy, StaticResolver(_stub_mapping(case))) as client:
        checked = await client.check(case["url"])
    problems = []
    if checked.reason != case["reason"]:
        problems.append(f"expected {case['reason']}, got {checked.reason}")
    if checked.allowed is not case["reason"].startswith("allow"):
        problems.append(f"expected {'allowed' if case['reason'].startswith('allow') else 'denied'}, "
                        f"got {checked.verdict}")
    return problems


async def ssrf_urls() -> ClassResult:
    """Check every URL form in the guard's table (numeric IPv4 spellings, IPv6 embeddings, userinfo)."""
    result = ClassResult("ssrf_url", "SSRF URL forms get the guard's verdict from its case table")
    for case in corpus.cases("ssrf_urls.toml"):
        await run_case(result, case["id"], lambda case=case: _check_case(GuardPolicy(), case))
    return result


async def _classify_case(case: dict[str, Any]) -> list[str]:
    verdict = classify_address(case["address"])
    problems = []
    if verdict.allowed is not case["allowed"] or verdict.reason != case["reason"]:
        problems.append(f"expected {case['reason']}, got {verdict.reason}")
    if verdict.embedded != case.get("embedded"):
        problems.append(f"expected embedded IPv4 {case.get('embedded')}, got {verdict.embedded}")
    return problems


async def ssrf_addresses() -> ClassResult:
    """Check that every special-purpose address in the guard's table gets its named class."""
    result = ClassResult("ssrf_address", "special-purpose IPv4 and IPv6 addresses classified and denied")
    for case in corpus.cases("ssrf_addresses.toml"):
        await run_case(result, case["id"], lambda case=case: _classify_case(case))
    return result


async def ssrf_allowances() -> ClassResult:
    """Check that an explicit private allowance lifts a deny reason for its own host and port only."""
    result = ClassResult("ssrf_allowance", "private allowances lift only the named host and port")
    for case in corpus.cases("ssrf_allowances.toml"):
        await run_case(result, case["id"],
                       lambda case=case: _check_case(GuardPolicy.from_strings(case["allow"]), case))
    return result

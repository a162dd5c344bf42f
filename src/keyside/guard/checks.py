"""`keyside doctor` checks for the outbound guard: the app's network settings and upstreams.

The checks run offline. They parse the manifest's [network] settings the way the sidecar
does, and check each service upstream with the URL check and, for an IP literal, the
address classification under the app's allowances. Host names are not resolved here; use
`keyside net check URL` for that.
"""

from __future__ import annotations

import argparse

import aiohttp

from keyside.cli.doctor import FAIL, OK, WARN, Check
from keyside.guard.addresses import describe_verdict
from keyside.guard.errors import GuardDenied
from keyside.guard.policy import GuardPolicy
from keyside.guard.resolve import DnsResolver
from keyside.guard.urls import check_url
from keyside.manifest import Manifest


def checks(args: argparse.Namespace) -> list[Check]:
    """Return the guard checks for the manifest loaded by doctor (`args.manifest`)."""
    results = [Check("outbound guard", OK, f"aiohttp {aiohttp.__version__}; URL, DNS and address checks "
                                           "on every outbound request")]
    manifest: Manifest | None = getattr(args, "manifest", None)
    if manifest is None:
        return results

    try:
        policy = GuardPolicy.from_strings(manifest.network.allow_private)
    except GuardDenied as error:
        results.append(Check("network allow_private", FAIL, error.message, error.fix))
        return results
    if policy.allow_private:
        pairs = ", ".join(f"{host}:{port}" for host, port in sorted(policy.allow_private))
        results.append(Check("network allow_private", WARN, f"private destinations allowed: {pairs}",
                             "Keep only local servers you run yourself in [network] allow_private."))

    if manifest.network.nameservers:
        try:
            DnsResolver.from_strings(manifest.network.nameservers)
        except GuardDenied as error:
            results.append(Check("network nameservers", FAIL, error.message, error.fix))
        else:
            results.append(Check("network nameservers", OK, "DNS queries go to "
                                 + ", ".join(manifest.network.nameservers)))

    for service in manifest.services.values():
        results.append(_upstream_check(service.name, service.upstream, policy, service.allow_private_network))
    return results


def _upstream_check(name: str, upstream: str, policy: GuardPolicy, allow_private_network: bool) -> Check:
    label = f"service {name} upstream"
    try:
        checked = check_url(upstream)
    except GuardDenied as error:
        return Check(label, FAIL, f"{upstream}: {error.message}", error.fix)
    if checked.address is None:
        return Check(label, OK, f"{checked.host_port} passes the URL check; its addresses are checked "
                                "on every request")

    if allow_private_network:
        policy = GuardPolicy(policy.allow_private | {(checked.host, checked.port)}, policy.limits)
    verdict = policy.decide(checked.host, checked.port, checked.address)
    if verdict.allowed:
        return Check(label, OK, f"{checked.host_port} is {describe_verdict(verdict)}")
    return Check(label, FAIL, f"{checked.host_port} is {describe_verdict(verdict)}",
                 "Point the service at a public API, or at a local server with allow_private_network = true.")

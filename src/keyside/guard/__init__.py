"""The outbound guard: one SSRF-checked HTTP client for every request the sidecar makes.

See client.py for the order of checks; addresses.py for the address classes and reasons.
"""

from keyside.guard.addresses import (
    ALLOW_CONFIGURED,
    ALLOW_PUBLIC,
    REASON_DESCRIPTIONS,
    Verdict,
    classify_address,
    describe_verdict,
)
from keyside.guard.client import CheckResult, GuardedClient, GuardedResponse
from keyside.guard.errors import GuardDenied
from keyside.guard.policy import GuardLimits, GuardPolicy, InvalidPolicy
from keyside.guard.resolve import DnsResolver, ResolvedAddress, Resolver, StaticResolver, SystemResolver
from keyside.guard.urls import CheckedUrl, check_url, parse_host_port

__all__ = [
    "ALLOW_CONFIGURED",
    "ALLOW_PUBLIC",
    "REASON_DESCRIPTIONS",
    "CheckResult",
    "CheckedUrl",
    "DnsResolver",
    "GuardDenied",
    "GuardLimits",
    "GuardPolicy",
    "GuardedClient",
    "GuardedResponse",
    "InvalidPolicy",
    "ResolvedAddress",
    "Resolver",
    "StaticResolver",
    "SystemResolver",
    "Verdict",
    "check_url",
    "classify_address",
    "describe_verdict",
    "parse_host_port",
]

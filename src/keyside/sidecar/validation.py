"""Checking a candidate key against its service's validation request, without storing it.

The host sends `validate` with a service name and a candidate value. The sidecar injects the
candidate into the service's declared probe (method, path, expected status) and reports:

    valid        the upstream returned the expected status
    invalid      401 or 403 (key_rejected), or another 4xx (unexpected_status)
    unreachable  no answer, a timeout, a guard denial, 429 or a 5xx: the key's validity is unknown
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from multidict import CIMultiDict

from keyside.errors import KeysideError
from keyside.guard import GuardDenied
from keyside.manifest import ServiceSpec
from keyside.sidecar.config import check_secret_value
from keyside.sidecar.inject import build_outbound
from keyside.sidecar.outbound import OutboundClients

logger = logging.getLogger(__name__)

# One probe is a single small request; a provider slower than this is reported unreachable.
VALIDATION_TIMEOUT_S = 15.0
# The probe's body is never read in full; this caps what the guard accepts while it is drained.
VALIDATION_MAX_BYTES = 64 * 1024
PROBE_HEADERS = {"Accept": "application/json"}


@dataclass(frozen=True)
class ValidationResult:
    result: str  # valid, invalid or unreachable
    reason: str
    status: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {"result": self.result, "reason": self.reason, "status": self.status}


def classify_status(status: int, expected: int) -> ValidationResult:
    """Turn the probe's HTTP status into a result."""
    if status == expected:
        return ValidationResult("valid", "status_expected", status)
    if status in (401, 403):
        return ValidationResult("invalid", "key_rejected", status)
    if status == 429 or status >= 500:
        return ValidationResult("unreachable", "upstream_status", status)
    return ValidationResult("invalid", "unexpected_status", status)


async def validate_key(service: ServiceSpec, candidate: str, clients: OutboundClients) -> ValidationResult:
    """Probe `service` with `candidate` injected.

    Raises KeysideError when the service has no key or no validation request, and BootstrapError
    (reason `invalid_secret_value`) when the candidate is malformed.
    """
    if service.secret is None:
        raise KeysideError(f"Service {service.name!r} uses no key, so there is nothing to validate.",
                           reason="service_has_no_key")
    spec = service.validate
    if spec is None:
        raise KeysideError(f"Service {service.name!r} declares no validation request.",
                           reason="validation_not_declared",
                           fix=f"add validate = {{ path = \"...\", status = 200 }} to [services.{service.name}]")
    check_secret_value(service.secret, candidate)

    path, _, query = spec.path.partition("?")
    outbound = build_outbound(service, candidate, path, query, CIMultiDict(PROBE_HEADERS))
    client = clients.for_service(service)
    try:
        async with asyncio.timeout(VALIDATION_TIMEOUT_S):
            async with client.request(spec.method, outbound.url, headers=outbound.headers,
                                      max_response_bytes=VALIDATION_MAX_BYTES,
                                      sensitive_headers=outbound.sensitive_headers,
                                      sensitive_query_params=outbound.sensitive_query_params,
                                      sensitive_values=outbound.sensitive_values) as response:
                result = classify_status(response.status, spec.status)
    except GuardDenied as error:
        result = ValidationResult("unreachable", error.reason)
    except TimeoutError:
        result = ValidationResult("unreachable", "timeout_total")
    logger.info("key validation service=%s result=%s reason=%s status=%s", service.name, result.result,
                result.reason, result.status)
    return result

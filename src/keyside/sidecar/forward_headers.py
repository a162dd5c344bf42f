"""Filters for the request headers sent to an upstream and the response headers sent back.

Requests: a header goes upstream only when it is on the standard list below, or is a custom
header (such as `anthropic-version` or `openai-beta`) whose name does not look like a credential.
Credentials from the caller (Authorization, cookies, API-key headers, the service's own key
header) never pass, so the only credential upstream is the one the sidecar injects.

Responses: framing headers are dropped, and so are headers that would act on the sidecar's origin
in a browser (cookies, HSTS, CORS, authentication prompts, Clear-Site-Data). The rest are scrubbed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from keyside.manifest import ServiceSpec
from keyside.sidecar.responses import SidecarHttpError
from keyside.sidecar.scrub import ScrubPattern

# Standard request headers forwarded as they are.
FORWARDED_REQUEST_HEADERS = frozenset({
    "accept", "accept-language", "content-type", "content-language", "user-agent", "cache-control",
    "pragma", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "range", "if-range",
    "idempotency-key",
})
# Headers never forwarded: framing and connection headers (hop-by-hop, RFC 9110 section 7.6.1),
# caller identity and credentials, and headers whose value the proxy itself sets.
DROPPED_REQUEST_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "host", "content-length", "accept-encoding", "expect", "authorization", "proxy-authorization",
    "cookie", "cookie2", "origin", "referer", "forwarded", "via", "x-real-ip", "x-client-ip",
    "true-client-ip", "dnt", "priority", "purpose", "x-requested-with",
})
DROPPED_REQUEST_PREFIXES = ("proxy-", "sec-", "x-forwarded-", "cf-", "x-keyside-", "access-control-")
# A custom header whose name contains one of these words is treated as a credential and dropped.
CREDENTIAL_WORDS = re.compile(r"auth|key|token|secret|passw|cookie|session|credential|signature|csrf|xsrf")
CUSTOM_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# The same without the tab, which a header value may contain.
VALUE_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Response headers never passed back to the caller.
DROPPED_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "content-length", "content-encoding",  # the guard has decoded the body; aiohttp frames it again
    "set-cookie", "set-cookie2", "www-authenticate", "proxy-authenticate", "location",
    "strict-transport-security", "alt-svc", "clear-site-data", "public-key-pins", "report-to", "nel",
    "content-security-policy", "content-security-policy-report-only", "x-frame-options", "refresh",
    "service-worker-allowed", "permissions-policy", "cache-control", "expires", "pragma",
})
DROPPED_RESPONSE_PREFIXES = ("access-control-", "cross-origin-", "x-keyside-")


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    # A Connection header can nominate further hop-by-hop headers by name.
    tokens: set[str] = set()
    for value in headers.getall("Connection", []):
        tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


def request_header_forwarded(name: str, service: ServiceSpec) -> bool:
    """Return True when a caller's header with this name may go to the service's upstream."""
    lowered = name.lower()
    if lowered in FORWARDED_REQUEST_HEADERS:
        return True
    if lowered in DROPPED_REQUEST_HEADERS or lowered.startswith(DROPPED_REQUEST_PREFIXES):
        return False
    if service.client_key_header and lowered == service.client_key_header:
        return False
    inject = service.inject
    if inject is not None and inject.kind == "header" and inject.name and lowered == inject.name.lower():
        return False
    return bool(CUSTOM_HEADER_NAME.match(lowered)) and not CREDENTIAL_WORDS.search(lowered)


def forward_request_headers(headers: CIMultiDictProxy[str], service: ServiceSpec) -> CIMultiDict[str]:
    """Return the caller's headers that may go upstream.

    Raises SidecarHttpError 400 when a header name or value contains a control character. A tab
    inside a value is allowed.
    """
    for name, value in headers.items():
        if CONTROL_CHARACTERS.search(name) or VALUE_CONTROL_CHARACTERS.search(value):
            raise SidecarHttpError(400, "header_control_characters",
                                   f"Header {name[:64]!r} contains a control character.",
                                   fix="remove CR, LF and NUL characters from header names and values")
    nominated = _connection_tokens(headers)
    forwarded: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in nominated and request_header_forwarded(name, service):
            forwarded.add(name, value)
    return forwarded


def response_headers(upstream_headers: Iterable[tuple[str, str]], pattern: ScrubPattern) -> CIMultiDict[str]:
    """Return the upstream response headers that may reach the caller, with secrets masked."""
    allowed: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream_headers:
        lowered = name.lower()
        if lowered in DROPPED_RESPONSE_HEADERS or lowered.startswith(DROPPED_RESPONSE_PREFIXES):
            continue
        if VALUE_CONTROL_CHARACTERS.search(value) or pattern.contains_text(name):
            continue
        allowed.add(name, pattern.scrub_text(value))
    return allowed

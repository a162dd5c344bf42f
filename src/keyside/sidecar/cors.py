"""Cross-origin rules: only the app's own page origins may call the sidecar from a browser.

An origin is allowed only by exact match of scheme, host and port, never by pattern, prefix or
wildcard. A request from any other origin is rejected whole, rather than merely left without a
CORS grant, because a browser sends some cross-origin requests (form posts) without a preflight
and they must not reach a route. This includes `Origin: null`, which sandboxed frames, file:
pages and some redirects send.
"""

from __future__ import annotations

import re

from aiohttp import hdrs, web

from keyside.sidecar.responses import ERROR_HEADER, SidecarHttpError

ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
# How long a browser may cache a preflight response. Chromium caps this at 7200 seconds.
PREFLIGHT_MAX_AGE_S = 600
# A requested header name is echoed back only when it is a plain token.
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
MAX_REQUESTED_HEADERS = 32


class CorsPolicy:
    """The set of allowed page origins, which the host may replace at run time."""

    def __init__(self, origins: frozenset[str]):
        self.origins = origins

    def check(self, request: web.BaseRequest) -> str | None:
        """Return the allowed Origin of a browser request, None when there is no Origin header.

        Raises SidecarHttpError for any Origin that is not exactly one of the app's origins.
        """
        values = request.headers.getall(hdrs.ORIGIN, [])
        if not values:
            return None
        if len(values) == 1 and values[0] in self.origins:
            return values[0]
        raise SidecarHttpError(403, "origin_not_allowed",
                               "Requests from this page origin are not allowed.",
                               fix="serve the page from one of the app's own origins")

    @staticmethod
    def is_preflight(request: web.BaseRequest) -> bool:
        return request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers

    @staticmethod
    def grant_headers(origin: str) -> dict[str, str]:
        """Return the headers that let the page at `origin` read a response."""
        return {
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
            hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: ERROR_HEADER,
            hdrs.VARY: "Origin",
        }

    def preflight_headers(self, request: web.BaseRequest, origin: str) -> dict[str, str]:
        """Return the response headers for a preflight from an allowed origin."""
        headers = self.grant_headers(origin)
        headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ALLOWED_METHODS
        headers[hdrs.ACCESS_CONTROL_MAX_AGE] = str(PREFLIGHT_MAX_AGE_S)
        requested = [name.strip() for name in
                     request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "").split(",") if name.strip()]
        allowed = [name for name in requested[:MAX_REQUESTED_HEADERS] if HEADER_NAME.match(name)]
        if allowed:
            # Echoing is safe because each forwarded header is filtered again on the real request.
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(allowed)
        # Private Network Access: a public page may not call loopback unless the response allows it.
        # Only the app's own origins reach this line, so no other page ever gets this grant.
        if request.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
            headers["Access-Control-Allow-Private-Network"] = "true"
        return headers

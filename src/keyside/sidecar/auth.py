"""Token authentication of requests, with a growing delay for clients that keep failing.

The token is read only from `Authorization: Bearer`, never from a URL query: a query ends up in
logs, browser history and Referer headers. For `keyside exec`, an exec token is also read from the
header where a service's SDK puts its API key (`client_key_header`, such as `x-api-key`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from keyside.sidecar.responses import SidecarHttpError
from keyside.sidecar.tokens import TokenGrant, TokenRegistry

logger = logging.getLogger(__name__)

# Failures a client may have in FAILURE_WINDOW_S before its failed requests are slowed. A page
# that reloads after a sidecar restart fails a few times with the old token.
FREE_FAILURES = 5
FAILURE_WINDOW_S = 60.0
# The delay of a failed request doubles per failure past FREE_FAILURES, from this start to this cap.
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 2.0
# At most one warning per client per interval; the rest are counted in the next warning.
WARNING_INTERVAL_S = 10.0
# Clients tracked at once; the oldest is forgotten first. Loopback clients share one address, so
# this bounds memory against odd peers rather than sets real fairness.
MAX_TRACKED_CLIENTS = 256


@dataclass
class _ClientFailures:
    times: deque[float] = field(default_factory=deque)
    last_warning: float = float("-inf")
    suppressed: int = 0


class FailureThrottle:
    """Failed-authentication bookkeeping per client address, with backoff and rate-limited warnings."""

    def __init__(self) -> None:
        self._clients: dict[str, _ClientFailures] = {}

    def record_failure(self, client: str, reason: str) -> float:
        """Count a failure and return the delay (seconds) before the 401 may be sent."""
        now = time.monotonic()
        state = self._clients.pop(client, None) or _ClientFailures()
        self._clients[client] = state  # re-inserted last, so the dict order is least recent first
        while len(self._clients) > MAX_TRACKED_CLIENTS:
            self._clients.pop(next(iter(self._clients)))

        while state.times and state.times[0] < now - FAILURE_WINDOW_S:
            state.times.popleft()
        state.times.append(now)
        failures = len(state.times)

        if failures > FREE_FAILURES:
            if now - state.last_warning >= WARNING_INTERVAL_S:
                logger.warning("token check failed repeatedly client=%s reason=%s failures_in_window=%d "
                               "suppressed_warnings=%d", client, reason, failures, state.suppressed)
                state.last_warning = now
                state.suppressed = 0
            else:
                state.suppressed += 1
            return min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** (failures - FREE_FAILURES - 1))
        logger.info("token check failed client=%s reason=%s", client, reason)
        return 0.0


def _bearer(request: web.BaseRequest) -> str | None:
    value = request.headers.get(hdrs.AUTHORIZATION)
    if value is None:
        return None
    scheme, _, credential = value.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return credential.strip()


class Authenticator:
    """Match a request's credential against the token registry, slowing repeated failures."""

    def __init__(self, tokens: TokenRegistry, throttle: FailureThrottle | None = None):
        self.tokens = tokens
        self.throttle = throttle or FailureThrottle()

    async def authenticate(self, request: web.BaseRequest, client_key_header: str | None = None) -> TokenGrant:
        """Return the grant of the request's token or raise SidecarHttpError 401 after any delay.

        `client_key_header` is the service's SDK key header; only exec tokens are accepted there.
        """
        bearer = _bearer(request)
        grant = self.tokens.match(bearer) if bearer else None
        presented = bearer is not None
        if grant is None and client_key_header:
            sdk_value = request.headers.get(client_key_header)
            presented = presented or sdk_value is not None
            grant = self.tokens.match(sdk_value, allow_ui=False) if sdk_value else None
        if grant is not None:
            return grant

        reason = "token_invalid" if presented else "token_missing"
        delay = self.throttle.record_failure(request.remote or "unknown", reason)
        if delay:
            await asyncio.sleep(delay)
        if presented:
            raise SidecarHttpError(401, reason, "The token is not valid for this sidecar.",
                                   fix="ask the host for the current token (it changes when the sidecar restarts)",
                                   headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="keyside"'})
        raise SidecarHttpError(401, reason, "The request has no token.",
                               fix="send it as Authorization: Bearer <token>; a token in the URL is never accepted",
                               headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="keyside"'})

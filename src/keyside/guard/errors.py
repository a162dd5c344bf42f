"""GuardDenied: the one error the outbound guard raises, with a named reason."""

from __future__ import annotations

from keyside.errors import KeysideError


class GuardDenied(KeysideError):
    """A request the guard stopped or could not complete.

    `reason` names the cause: a policy decision (`url_scheme`, `deny_private`, `dns_rebinding`,
    `redirect_leaks_secret`) or a limit or upstream failure (`timeout_connect`,
    `response_too_large`, `connect_failed`). The message names the host and port but never a
    URL query, a header value or a secret.
    """

    reason = "guard_denied"

    def __init__(self, reason: str, message: str, *, fix: str | None = None):
        super().__init__(message, reason=reason, fix=fix)

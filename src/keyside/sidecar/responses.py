"""HTTP errors with named reasons, and the headers every sidecar response carries.

Error bodies are `{"error": {"reason": ..., "message": ...}}`. The reason also goes out in the
`X-Keyside-Error` header, so a client can tell the sidecar's own 401 (a stale token) from an
upstream's 401 (a rejected key) without parsing the body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from keyside.errors import KeysideError

ERROR_HEADER = "X-Keyside-Error"
# Sent on every response. The sandbox CSP keeps a proxied HTML or SVG body from running script in
# the sidecar's origin if someone opens it as a page. no-store keeps bodies out of browser caches.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SidecarHttpError(KeysideError):
    """A request the sidecar rejects or cannot complete, with its HTTP status and reason."""

    def __init__(self, status: int, reason: str, message: str, *, fix: str | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message, reason=reason, fix=fix)
        self.status = status
        self.headers = dict(headers or {})


def json_bytes(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def json_response(body: object, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(body=json_bytes(body), status=status, content_type="application/json")
    response.headers.update(SECURITY_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def error_body(reason: str, message: str, fix: str | None = None) -> dict[str, dict[str, str]]:
    error = {"reason": reason, "message": message}
    if fix:
        error["fix"] = fix
    return {"error": error}


def error_response(error: SidecarHttpError, *, message: str, fix: str | None,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    """Build the JSON response for `error`, with `message` and `fix` already scrubbed by the caller."""
    merged = dict(headers or {})
    merged.update(error.headers)
    merged[ERROR_HEADER] = error.reason
    return json_response(error_body(error.reason, message, fix), status=error.status, headers=merged)

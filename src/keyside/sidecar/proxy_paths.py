"""Splitting and checking the path a caller chooses under `/api/svc/<service>/`.

The caller picks the path, never the destination, so the path must not be able to climb out of
the service's allowed prefixes once an upstream decodes it. Checks run on the raw, still-encoded
path, because that is what the upstream receives. Dot segments, doubled slashes, control
characters and escapes of dots, slashes, backslashes and percent signs are rejected outright
rather than normalised, because servers disagree on how to normalise them.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from keyside.sidecar.responses import SidecarHttpError

SERVICE_PREFIX = "/api/svc/"
# RFC 3986 path characters (pchar and "/"), with "%" only as the start of an escape.
PATH_CHARS = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$")
# Escapes that decode to ".", "/", "\", "%" or a control character.
FORBIDDEN_ESCAPES = re.compile(r"%(?:2[eEfF5]|5[cC]|[01][0-9A-Fa-f]|7[fF])")
# Raw control characters, and the CR, LF and NUL escapes that would split a header or a log line
# on an upstream that decodes the value into one.
QUERY_CONTROL = re.compile(r"[\x00-\x1f\x7f]|%0[0aAdD]")
MAX_PATH_CHARS = 4096


def check_forward_path(path: str) -> None:
    """Raise SidecarHttpError 400 unless `path` is a plain absolute path with no traversal."""
    problem = None
    if len(path) > MAX_PATH_CHARS:
        problem = f"is longer than {MAX_PATH_CHARS} characters"
    elif not PATH_CHARS.match(path):
        problem = "contains characters that must be percent-encoded, or a bad escape"
    elif FORBIDDEN_ESCAPES.search(path):
        problem = "contains an encoded dot, slash, backslash, percent sign or control character"
    elif "//" in path:
        problem = "contains an empty segment (//)"
    elif any(segment in (".", "..") for segment in path.split("/")):
        problem = "contains a . or .. segment"
    if problem is not None:
        raise SidecarHttpError(400, "invalid_path", f"The path under the service {problem}.",
                               fix="send a plain path such as /v1/models")


def path_allowed(path: str, prefixes: tuple[str, ...]) -> bool:
    """Return True when `path` is under one of `prefixes`, matching whole segments.

    A prefix ending in "/" covers everything below it. Any other prefix covers itself and the
    paths below it, so "/v1" allows "/v1" and "/v1/models" but not "/v1beta".
    """
    for prefix in prefixes:
        if prefix.endswith("/"):
            if path.startswith(prefix) or path == prefix[:-1]:
                return True
        elif path == prefix or path.startswith(prefix + "/"):
            return True
    return False


def check_query(query: str) -> None:
    """Raise SidecarHttpError 400 for a raw control character or an encoded CR, LF or NUL."""
    if QUERY_CONTROL.search(query):
        raise SidecarHttpError(400, "invalid_query", "The query contains a control character.",
                               fix="remove line breaks and NUL characters from query values")


def drop_query_param(query: str, name: str) -> str:
    """Return the raw `query` without any parameter called `name` (compared case-insensitively)."""
    if not query:
        return query
    lowered = name.lower()
    other_params = [part for part in query.split("&")
                    if part and unquote_plus(part.partition("=")[0]).lower() != lowered]
    return "&".join(other_params)

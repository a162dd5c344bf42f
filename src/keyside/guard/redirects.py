"""Redirect planning: where the next hop goes and what it may carry.

The guard follows redirects itself, so every hop passes the URL check, resolution and the
address check again. When a hop changes scheme or origin, credentials do not travel along:
the standard credential headers and the caller's sensitive headers and query parameters are
dropped, and a hop whose URL still carries a sensitive value is denied.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urljoin

from multidict import CIMultiDict

from keyside.guard.errors import GuardDenied
from keyside.guard.urls import CheckedUrl, check_url

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that carry credentials in any HTTP request; never sent across origins.
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
# Headers that describe the body; dropped when a redirect turns the request into a GET.
BODY_HEADERS = ("content-type", "content-length", "content-encoding", "transfer-encoding")


@dataclass(frozen=True)
class RedirectHop:
    """The next request after a redirect."""

    target: CheckedUrl
    method: str
    keep_body: bool
    cross_origin: bool
    headers: CIMultiDict[str]


def plan_redirect(current: CheckedUrl, method: str, status: int, location: str,
                  headers: CIMultiDict[str], *, sensitive_headers: Collection[str] = (),
                  sensitive_query_params: Collection[str] = (),
                  sensitive_values: Collection[str] = ()) -> RedirectHop:
    """Plan the hop for a `status` redirect to `location`; raises GuardDenied for a bad target.

    Method changes follow RFC 9110 section 15.4 as browsers implement it: 303 turns anything
    but HEAD into GET, and 301 or 302 turn POST into GET; 307 and 308 keep method and body.
    """
    target = check_url(urljoin(current.url, location))
    cross_origin = target.origin != current.origin

    next_method = method
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        next_method = "GET"
    keep_body = next_method == method

    next_headers = CIMultiDict(headers)
    if not keep_body:
        for name in BODY_HEADERS:
            next_headers.popall(name, None)
    if cross_origin:
        for name in (*CREDENTIAL_HEADERS, *sensitive_headers):
            next_headers.popall(name, None)
        target = _drop_query_params(target, sensitive_query_params)
        _deny_if_leaks(target, sensitive_values)
    return RedirectHop(target, next_method, keep_body, cross_origin, next_headers)


def _drop_query_params(target: CheckedUrl, names: Collection[str]) -> CheckedUrl:
    if not names or "?" not in target.path_query:
        return target
    path, query = target.path_query.split("?", 1)
    dropped = {name.lower() for name in names}
    pairs = parse_qsl(query, keep_blank_values=True)
    remaining = [(key, value) for key, value in pairs if key.lower() not in dropped]
    if len(remaining) == len(pairs):
        return target
    rebuilt = f"{target.scheme}://{target.host_port}{path}"
    if remaining:
        rebuilt += "?" + urlencode(remaining)
    return check_url(rebuilt)


def _deny_if_leaks(target: CheckedUrl, values: Collection[str]) -> None:
    """Deny a cross-origin hop whose URL contains a sensitive value, raw or percent-decoded."""
    forms = (target.url, unquote(target.url), unquote(target.url.replace("+", " ")))
    for value in values:
        if value and any(value in form for form in forms):
            raise GuardDenied("redirect_leaks_secret",
                              f"Redirect to {target.host_port} would carry a credential to another origin.",
                              fix="The upstream redirects across origins with a key in the URL; "
                                  "call the final URL directly or refuse redirects for this service.")

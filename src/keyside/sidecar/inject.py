"""Putting a key into an upstream request, the way its service declares.

The result also names every place the key went (header, query parameter, URL spellings), so the
outbound guard can drop them when a redirect leaves the service's origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from multidict import CIMultiDict

from keyside.manifest import ServiceSpec
from keyside.sidecar.keystore import basic_credential
from keyside.sidecar.proxy_paths import drop_query_param


@dataclass
class OutboundRequest:
    url: str
    headers: CIMultiDict[str]
    # Header names and query parameters that carry the key: dropped on a hop to another origin.
    sensitive_headers: tuple[str, ...] = ()
    sensitive_query_params: tuple[str, ...] = ()
    # Spellings of the key: a redirect whose URL contains one is refused.
    sensitive_values: tuple[str, ...] = ()


def build_outbound(service: ServiceSpec, key: str | None, path: str, query: str,
                   headers: CIMultiDict[str]) -> OutboundRequest:
    """Return the upstream request for `path?query` with `key` injected per `service.inject`.

    `path` and `query` are raw (percent-encoded) and already checked; `headers` are the caller's
    forwarded headers, to which the key header is added.
    """
    inject = service.inject
    if inject is None or key is None:
        url = service.upstream + path + (f"?{query}" if query else "")
        return OutboundRequest(url, headers)

    encoded_key = quote(key, safe="")
    sensitive_headers: tuple[str, ...] = ()
    sensitive_params: tuple[str, ...] = ()
    if inject.kind == "header" and inject.name:
        headers[inject.name] = key
        sensitive_headers = (inject.name,)
    elif inject.kind == "bearer":
        headers["Authorization"] = f"Bearer {key}"
        sensitive_headers = ("Authorization",)
    elif inject.kind == "basic":
        headers["Authorization"] = f"Basic {basic_credential(inject.username, key)}"
        sensitive_headers = ("Authorization",)
    elif inject.kind == "query" and inject.name:
        query = drop_query_param(query, inject.name)
        query = f"{query}&{inject.name}={encoded_key}" if query else f"{inject.name}={encoded_key}"
        sensitive_params = (inject.name,)
    elif inject.kind == "path" and inject.template:
        path = inject.template.replace("{key}", encoded_key) + path

    url = service.upstream + path + (f"?{query}" if query else "")
    values = tuple(dict.fromkeys((key, encoded_key)))
    return OutboundRequest(url, headers, sensitive_headers, sensitive_params, values)

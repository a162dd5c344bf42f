"""`/api/svc/<service>/<path>`: forward an authenticated call to the service's fixed upstream.

Steps, in order:
  1. The token may use the service, the method is allowed and the URL carries no token.
  2. The path is plain and under an allowed prefix, and the query has no control characters.
  3. The key is configured, the caller's headers are filtered and the key is injected.
  4. The guard sends the request, and the response comes back with secrets scrubbed.
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web
from multidict import CIMultiDict

from keyside.guard import GuardDenied, GuardedResponse
from keyside.manifest import ServiceSpec
from keyside.sidecar.forward_headers import forward_request_headers, response_headers
from keyside.sidecar.inject import build_outbound
from keyside.sidecar.keystore import KeyStore
from keyside.sidecar.outbound import OutboundClients, outbound_error
from keyside.sidecar.proxy_paths import check_forward_path, check_query, path_allowed
from keyside.sidecar.responses import SECURITY_HEADERS, SidecarHttpError
from keyside.sidecar.tokens import TokenGrant, TokenRegistry

logger = logging.getLogger(__name__)

# Request bodies are read whole before forwarding, so a redirect can repeat them and the upstream
# gets a Content-Length. 32 MiB covers JSON calls and the audio and image uploads of model APIs.
MAX_REQUEST_BODY_BYTES = 32 * 1024 * 1024
NO_BODY_STATUSES = frozenset({204, 304})
# Bodies up to this declared length are read whole and sent with a Content-Length.
MAX_WHOLE_BODY_BYTES = 64 * 1024


class ServiceProxy:
    def __init__(self, keys: KeyStore, tokens: TokenRegistry, clients: OutboundClients):
        self.keys = keys
        self.tokens = tokens
        self.clients = clients

    async def forward(self, request: web.BaseRequest, grant: TokenGrant, service: ServiceSpec, path: str,
                      query: str, cors_headers: dict[str, str]) -> web.StreamResponse:
        # 1. The token may use this service, with this method, under this path.
        if not grant.allows_service(service.name):
            raise SidecarHttpError(403, "token_scope", f"This token may not use service {service.name!r}.",
                                   fix="ask the host for a token that lists this service")
        if request.method not in service.methods:
            raise SidecarHttpError(405, "method_not_allowed",
                                   f"Service {service.name!r} does not allow {request.method}.",
                                   headers={hdrs.ALLOW: ", ".join(service.methods)})
        self._reject_token_in_url(path, query)
        check_forward_path(path)
        if not path_allowed(path, service.paths):
            raise SidecarHttpError(403, "path_not_allowed",
                                   f"Path {path[:200]!r} is not under an allowed prefix of service {service.name!r}.",
                                   fix=f"use a path under {', '.join(service.paths)}")
        check_query(query)

        # 2. The key, the forwarded headers and the body.
        key = None
        if service.secret is not None:
            key = self.keys.get(service.secret)
            if key is None:
                raise SidecarHttpError(424, "secret_not_configured",
                                       f"Secret {service.secret} for service {service.name!r} is not set.",
                                       fix=f"set {service.secret} in the app's settings or with "
                                           f"`keyside secrets set {service.secret}`")
        headers = forward_request_headers(request.headers, service)
        outbound = build_outbound(service, key, path, query, headers)
        body = await _read_body(request)

        # 3. Send through the guard and relay the response.
        client = self.clients.for_service(service)
        try:
            async with client.request(request.method, outbound.url, headers=outbound.headers, data=body,
                                      sensitive_headers=outbound.sensitive_headers,
                                      sensitive_query_params=outbound.sensitive_query_params,
                                      sensitive_values=outbound.sensitive_values) as upstream:
                return await self._relay(request, service, upstream, cors_headers)
        except GuardDenied as error:
            raise outbound_error(error) from None

    def _reject_token_in_url(self, path: str, query: str) -> None:
        # A token in a URL would reach the upstream and its logs, so the request is rejected.
        for token in self.tokens.values():
            if token in path or token in query:
                raise SidecarHttpError(400, "token_in_url", "The URL contains a sidecar token.",
                                       fix="send the token only in the Authorization header")

    async def _relay(self, request: web.BaseRequest, service: ServiceSpec, upstream: GuardedResponse,
                     cors_headers: dict[str, str]) -> web.StreamResponse:
        pattern = self.keys.pattern
        headers = response_headers(upstream.headers.items(), pattern)
        headers.update(SECURITY_HEADERS)
        headers.update(cors_headers)
        if request.method == hdrs.METH_HEAD or upstream.status in NO_BODY_STATUSES:
            return web.Response(status=upstream.status, headers=headers)
        if _is_small_document(upstream):
            return await self._relay_whole(service, upstream, headers)

        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        scrubber = pattern.stream()
        try:
            async for chunk in upstream.iter_chunks():
                data = scrubber.feed(chunk)
                if data:
                    await response.write(data)
            tail = scrubber.finish()
            if tail:
                await response.write(tail)
        except GuardDenied as error:
            # The status line is already sent. Cutting the connection shows the client that the
            # body is incomplete, where a clean end would pass a truncated body off as whole.
            logger.warning("upstream body failed service=%s reason=%s", service.name, error.reason)
            _abort(request)
            return response
        except ConnectionError:
            logger.info("client left during the response service=%s", service.name)
            return response
        await response.write_eof()
        return response

    async def _relay_whole(self, service: ServiceSpec, upstream: GuardedResponse,
                           headers: CIMultiDict[str]) -> web.Response:
        # Nothing is sent yet, so a failure here still becomes a proper error response.
        try:
            body = await upstream.read()
        except GuardDenied as error:
            logger.warning("upstream body failed service=%s reason=%s", service.name, error.reason)
            raise outbound_error(error) from None
        return web.Response(status=upstream.status, headers=headers, body=self.keys.pattern.scrub_bytes(body))


def _is_small_document(upstream: GuardedResponse) -> bool:
    """Return True for a body of known small length that is not an event stream.

    Such a body (most JSON API responses) is read whole and sent in one write with its exact
    length, which costs less than chunked relaying. Everything else streams chunk by chunk.
    """
    declared = upstream.headers.get(hdrs.CONTENT_LENGTH, "")
    if not declared.isdigit() or int(declared) > MAX_WHOLE_BODY_BYTES:
        return False
    return not upstream.headers.get(hdrs.CONTENT_TYPE, "").startswith("text/event-stream")


async def _read_body(request: web.BaseRequest) -> bytes | None:
    if not request.body_exists:
        return None
    declared = request.content_length
    if declared is not None and declared > MAX_REQUEST_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
        if total > MAX_REQUEST_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> SidecarHttpError:
    return SidecarHttpError(413, "request_too_large",
                            f"The request body is larger than {MAX_REQUEST_BODY_BYTES} bytes.",
                            fix="send a smaller body")


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()

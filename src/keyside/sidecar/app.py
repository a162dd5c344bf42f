"""The sidecar's request pipeline and its own routes.

Every request passes these steps in this order, and a failed step ends it:

    1. Host header names this listener (DNS rebinding defence)      -> 400 / 421
    2. Request target is a plain path                               -> 400
    3. Origin is absent or one of the app's page origins; preflights -> 403, or 204 for a preflight
    4. GET /api/health is served here, without a token
    5. Token: Authorization: Bearer, or an exec token in the service's SDK key header -> 401
    6. Route: /api/svc/<service>/..., /api/feed, /api/status, /api/traffic -> 403 for exec tokens
       outside their services, 404 for anything else
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import hdrs, web

from keyside import __version__
from keyside.manifest import ServiceSpec
from keyside.redact import Redactor
from keyside.sidecar.auth import Authenticator
from keyside.sidecar.config import SidecarConfig
from keyside.sidecar.cors import CorsPolicy
from keyside.sidecar.feed import fetch_feed
from keyside.sidecar.hostcheck import HostCheck
from keyside.sidecar.keystore import KeyStore
from keyside.sidecar.outbound import OutboundClients
from keyside.sidecar.proxy_paths import SERVICE_PREFIX
from keyside.sidecar.responses import SECURITY_HEADERS, SidecarHttpError, error_response, json_response
from keyside.sidecar.service_proxy import ServiceProxy
from keyside.sidecar.tokens import TokenRegistry
from keyside.sidecar.traffic import TrafficLog

logger = logging.getLogger(__name__)

# Recorded in the traffic log for a request whose client left before the response was complete.
STATUS_CLIENT_CLOSED = 499


class _RequestState:
    """State that later pipeline steps and the traffic log read from earlier steps."""

    __slots__ = ("cors_headers", "service")

    def __init__(self) -> None:
        self.cors_headers: dict[str, str] = {}
        self.service: str | None = None


class Sidecar:
    """The state a running sidecar holds, and the handler for every HTTP request."""

    def __init__(self, config: SidecarConfig, redactor: Redactor):
        self.config = config
        self.redactor = redactor
        self.services: dict[str, ServiceSpec] = dict(config.services)
        self.tokens = TokenRegistry(config.token)
        redactor.add(config.token)
        self.keys = KeyStore(self.services, redactor, extra_values=self.tokens.values)
        for name, value in config.secrets.items():
            self.keys.set(name, value)
        self.cors = CorsPolicy(config.origins)
        self.auth = Authenticator(self.tokens)
        self.clients = OutboundClients(config)
        self.proxy = ServiceProxy(self.keys, self.tokens, self.clients)
        self.traffic = TrafficLog(redactor)
        self.port = 0
        self._host_check: HostCheck | None = None

    def set_port(self, port: int) -> None:
        """Record the bound port; the Host check accepts only this port."""
        self.port = port
        self._host_check = HostCheck(port)

    async def close(self) -> None:
        await self.clients.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Run the pipeline for one request.

        A rejected or failed request becomes an error response. Only a client that left
        (CancelledError, ConnectionError) ends it with an exception.
        """
        started = time.monotonic()
        started_wall = time.time()
        state = _RequestState()
        status = STATUS_CLIENT_CLOSED
        reason: str | None = None
        try:
            try:
                response = await self._pipeline(request, state)
            except SidecarHttpError as error:
                reason = error.reason
                response = self._error(request, error, state)
            except (asyncio.CancelledError, ConnectionError):
                reason = "client_closed"
                raise
            except Exception:
                logger.exception("request failed method=%s path=%s", request.method, _path_of(request))
                reason = "internal_error"
                response = self._error(request, SidecarHttpError(500, reason, "The sidecar failed to handle "
                                                                 "the request; see its log."), state)
            status = response.status
            return response
        finally:
            self.traffic.record(started_wall=started_wall, method=request.method, raw_path=request.raw_path,
                                status=status, duration_s=time.monotonic() - started, service=state.service,
                                reason=reason)

    async def _pipeline(self, request: web.BaseRequest, state: _RequestState) -> web.StreamResponse:
        # 1. Host header, before anything else looks at the request.
        assert self._host_check is not None, "set_port() must run before requests arrive"  # noqa: S101
        self._host_check.check(request)

        # 2. Only origin-form targets ("/path?query"); an absolute URL would name another host.
        raw_path = request.raw_path
        if not raw_path.startswith("/"):
            raise SidecarHttpError(400, "invalid_request_target", "The request target must be a path.")
        path, _, query = raw_path.partition("?")

        # 3. CORS. A foreign or null Origin ends here; an allowed one is echoed on every response.
        origin = self.cors.check(request)
        if origin is not None:
            state.cors_headers = self.cors.grant_headers(origin)
            if self.cors.is_preflight(request):
                return web.Response(status=204, headers={**SECURITY_HEADERS,
                                                         **self.cors.preflight_headers(request, origin)})

        # 4. The health route: no token, nothing secret.
        if path == "/api/health":
            _require_read_method(request)
            return json_response({"ok": True, "version": __version__}, headers=state.cors_headers)

        # 5. Token. For a service route, an exec token may also come in the SDK's key header.
        service = None
        if path.startswith(SERVICE_PREFIX):
            name, _, _ = path[len(SERVICE_PREFIX):].partition("/")
            service = self.services.get(name)
            state.service = service.name if service else None
        grant = await self.auth.authenticate(request, service.client_key_header if service else None)

        # 6. Route.
        if path.startswith(SERVICE_PREFIX):
            if service is None:
                raise SidecarHttpError(404, "unknown_service", "No service has that name.",
                                       fix="use a service name from the app's keyside.toml")
            forward_path = path[len(SERVICE_PREFIX) + len(service.name):] or "/"
            return await self.proxy.forward(request, grant, service, forward_path, query, state.cors_headers)
        if not grant.is_ui:
            raise SidecarHttpError(403, "token_scope", "This token may only call the services it was issued for.",
                                   fix="call /api/svc/<service>/... with it")
        if path == "/api/feed":
            return await fetch_feed(request, self.clients, self.keys, state.cors_headers)
        if path == "/api/status":
            _require_read_method(request)
            return json_response(self.status(), headers=state.cors_headers)
        if path == "/api/traffic":
            _require_read_method(request)
            return json_response({"entries": self.traffic.entries()}, headers=state.cors_headers)
        raise SidecarHttpError(404, "not_found", "No such route.",
                               fix="use /api/svc/<service>/..., /api/feed, /api/status or /api/traffic")

    def status(self) -> dict[str, object]:
        """Return the body of /api/status: configuration, uptime and counters, never a value."""
        services = []
        for service in self.services.values():
            services.append({
                "name": service.name,
                "upstream": service.upstream,
                "secret": service.secret,
                "configured": service.secret is None or self.keys.get(service.secret) is not None,
                "inject": service.inject.kind if service.inject else None,
                "methods": list(service.methods),
                "paths": list(service.paths),
                "allow_private_network": service.allow_private_network,
                "validation": service.validate is not None,
            })
        return {
            "ok": True,
            "version": __version__,
            "uptime_s": self.traffic.uptime_s,
            "port": self.port,
            "services": services,
            "secrets_configured": self.keys.names(),
            "exec_tokens": self.tokens.exec_token_count,
            "counters": self.traffic.counters(),
        }

    def _error(self, request: web.BaseRequest, error: SidecarHttpError, state: _RequestState) -> web.Response:
        message = self._scrub(error.message)
        fix = self._scrub(error.fix) if error.fix else None
        log = logger.warning if error.status >= 500 else logger.info
        log("request rejected method=%s path=%s status=%d reason=%s service=%s", request.method,
            _path_of(request), error.status, error.reason, state.service)
        return error_response(error, message=message, fix=fix, headers=state.cors_headers)

    def _scrub(self, text: str) -> str:
        return self.redactor.redact(self.keys.pattern.scrub_text(text))


def _require_read_method(request: web.BaseRequest) -> None:
    if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
        raise SidecarHttpError(405, "method_not_allowed", f"{request.method} is not allowed on this route.",
                               headers={hdrs.ALLOW: "GET, HEAD"})


def _path_of(request: web.BaseRequest) -> str:
    return request.raw_path.partition("?")[0][:300]

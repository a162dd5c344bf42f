"""The sidecar's outbound clients, all built on the guard, and how their failures map to HTTP.

Each service gets its own GuardedClient whose private allowance covers only the app's
[network] allow_private pairs and, when the service sets allow_private_network, its own upstream.
So a redirect from one service's upstream can never reach another service's local server. Feeds
get a client with the [network] pairs only.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from keyside.guard import DnsResolver, GuardDenied, GuardedClient, GuardLimits, GuardPolicy, SystemResolver
from keyside.manifest import ServiceSpec
from keyside.sidecar.config import SidecarConfig
from keyside.sidecar.responses import SidecarHttpError

logger = logging.getLogger(__name__)

# Guard reasons that mean the upstream did not respond in time.
TIMEOUT_REASONS = frozenset({"timeout_connect", "timeout_read", "timeout_total"})
# Guard reasons that mean the upstream could not be reached or sent something broken.
UNREACHABLE_REASONS = frozenset({"connect_failed", "upstream_failed", "tls_failed", "tls_certificate",
                                 "response_invalid", "dns_failed", "dns_no_answer", "dns_timeout"})


class OutboundClients:
    """One GuardedClient per service, one for feeds, sharing a resolver."""

    def __init__(self, config: SidecarConfig):
        self._config = config
        self._resolver = DnsResolver(list(config.nameservers)) if config.nameservers else SystemResolver()
        self._limits = replace(GuardLimits(), **config.timeouts)
        self._services: dict[str, GuardedClient] = {}
        self._feed: GuardedClient | None = None

    def for_service(self, service: ServiceSpec) -> GuardedClient:
        client = self._services.get(service.name)
        if client is None:
            allowed = set(self._config.allow_private)
            if service.allow_private_network:
                allowed.add((service.upstream_host, service.upstream_port))
                logger.info("private upstream allowed service=%s upstream=%s", service.name, service.upstream)
            client = GuardedClient(GuardPolicy(frozenset(allowed), self._limits), self._resolver)
            self._services[service.name] = client
        return client

    def for_feeds(self) -> GuardedClient:
        if self._feed is None:
            self._feed = GuardedClient(GuardPolicy(self._config.allow_private, self._limits), self._resolver)
        return self._feed

    async def close(self) -> None:
        clients = list(self._services.values()) + ([self._feed] if self._feed else [])
        self._services.clear()
        self._feed = None
        for client in clients:
            await client.close()


def outbound_error(error: GuardDenied, *, denied_status: int = 502) -> SidecarHttpError:
    """Map a guard failure to a SidecarHttpError that keeps the guard's reason unchanged.

    `denied_status` is for policy denials: 502 when the manifest fixed the URL (a service), 403
    when the caller chose it (a feed).
    """
    if error.reason in TIMEOUT_REASONS:
        status = 504
    elif error.reason in UNREACHABLE_REASONS or error.reason == "response_too_large":
        status = 502
    else:
        status = denied_status
    return SidecarHttpError(status, error.reason, error.message, fix=error.fix)

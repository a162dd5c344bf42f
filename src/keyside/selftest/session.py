"""The throwaway setup the self-test attacks: fake upstreams and a real sidecar, all on loopback.

`Upstreams` starts three recording servers on 127.0.0.1: the one every service points at, another
origin that the app allows explicitly (a redirect target), and a stranger nothing allows.
`SelftestSidecar` builds an app manifest for them, validated like any keyside.toml, stores fresh
random keys in a memory vault, and starts `python -m keyside.sidecar` through the host's
Supervisor, which verifies the sidecar's handshake proof before the token is used. Nothing is
written outside a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from keyside.errors import KeysideError
from keyside.host.supervisor import Supervisor
from keyside.manifest import Manifest, parse_manifest
from keyside.redact import Redactor
from keyside.selftest import corpus
from keyside.selftest.upstream import RecordingUpstream
from keyside.vault import open_vault

logger = logging.getLogger(__name__)

APP_ID = "keyside-selftest"
# The supervisor's whole start: spawn, bootstrap and handshake. A cold start takes about a second.
SIDECAR_START_TIMEOUT_S = 20.0
# Outbound timeouts of the throwaway sidecar, short because every upstream is a local fake.
SIDECAR_LIMITS = {"connect_timeout_s": 5.0, "read_timeout_s": 10.0, "total_timeout_s": 20.0}

# Service name -> (secret name, inject table of keyside.toml). Each injects the key differently.
KEYED_SERVICES = {
    "bearer": ("SELFTEST_BEARER_KEY", {"bearer": True}),
    "header": ("SELFTEST_HEADER_KEY", {"header": "X-Api-Key"}),
    "query": ("SELFTEST_QUERY_KEY", {"query": "api_key"}),
}
KEYED_PATHS = ["/echo/", "/leak", "/redirect"]
# A keyless service with the prefixes that tests/data/sidecar_paths.json is written for.
PATH_SERVICE = "pathcheck"
PATH_SERVICE_PREFIXES = ["/v1/", "/api/quote"]


def new_key(service: str) -> str:
    """Return a fresh random key. The query key contains '/', '+' and '=' to exercise encoded forms."""
    if service == "query":
        return f"selftest/q+{secrets.token_urlsafe(18)}="
    return f"selftest-{service}-{secrets.token_urlsafe(24)}"


class SidecarStartError(KeysideError):
    """The throwaway sidecar did not start; `reason` is the supervisor's reason."""

    reason = "selftest_sidecar_failed"


@dataclass
class Upstreams:
    """The three fake upstreams, started and closed together."""

    service: RecordingUpstream = field(default_factory=RecordingUpstream)
    allowed: RecordingUpstream = field(default_factory=RecordingUpstream)
    stranger: RecordingUpstream = field(default_factory=RecordingUpstream)

    def all(self) -> tuple[RecordingUpstream, ...]:
        return (self.service, self.allowed, self.stranger)

    def clear(self) -> None:
        for upstream in self.all():
            upstream.clear()

    def nothing_received(self) -> bool:
        return all(not upstream.requests for upstream in self.all())

    async def start(self) -> Upstreams:
        for upstream in self.all():
            await upstream.start()
        return self

    async def close(self) -> None:
        for upstream in self.all():
            await upstream.close()


@dataclass
class Target:
    """The sidecar under test as the attack classes address it: port, token, keys and upstreams."""

    port: int
    token: str
    keys: dict[str, str]  # service name -> the key the sidecar injects for it
    upstreams: Upstreams
    app_origins: list[str]
    log_dir: Path | None = None

    def secret_values(self) -> list[str]:
        """Return every key and the session token: values no caller or upstream may see."""
        return [*self.keys.values(), self.token]


def build_manifest(upstreams: Upstreams, folder: Path) -> Manifest:
    """Return the self-test app's manifest, validated by the same loader as any keyside.toml."""
    service_origin = upstreams.service.origin
    services: dict[str, Any] = {}
    for name, (secret, inject) in KEYED_SERVICES.items():
        services[name] = {"upstream": service_origin, "secret": secret, "inject": inject,
                          "methods": ["GET", "POST"], "paths": KEYED_PATHS, "allow_private_network": True}
    services[PATH_SERVICE] = {"upstream": service_origin, "methods": ["GET"], "paths": PATH_SERVICE_PREFIXES,
                              "allow_private_network": True}
    data = {
        "app": {"id": APP_ID, "name": "keyside security self-test"},
        "secrets": {secret: {"description": f"Random key for the self-test service {name}"}
                    for name, (secret, _) in KEYED_SERVICES.items()},
        "services": services,
        # The explicit private allowance: a second loopback origin that redirects may reach.
        "network": {"allow_private": [upstreams.allowed.host_port]},
    }
    return parse_manifest(folder / "keyside.toml", data)


class SelftestSidecar:
    """A real sidecar with a memory vault, started by the host's Supervisor; use with `async with`."""

    def __init__(self, upstreams: Upstreams):
        self.upstreams = upstreams
        self.app_origins: list[str] = list(corpus.load("sidecar_origins.json")["app_origins"])
        self.redactor = Redactor()
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._supervisor: Supervisor | None = None
        self.target: Target | None = None

    async def __aenter__(self) -> Target:
        self._folder = tempfile.TemporaryDirectory(prefix="keyside-selftest-")
        folder = Path(self._folder.name)
        log_dir = folder / "logs"
        manifest = build_manifest(self.upstreams, folder)

        vault = open_vault(manifest, "memory")
        keys: dict[str, str] = {}
        for service_name, (secret_name, _) in KEYED_SERVICES.items():
            keys[service_name] = new_key(service_name)
            vault.set(secret_name, keys[service_name])
            self.redactor.add(keys[service_name])
        vault.load()

        def build_bootstrap() -> dict[str, Any]:
            return {
                "secrets": vault.snapshot(),
                "services": [service.to_dict() for service in manifest.services.values()],
                "origins": self.app_origins,
                "allow_private": list(manifest.network.allow_private),
                "nameservers": [],
                "log_dir": str(log_dir),
                "log_level": "INFO",
                "limits": SIDECAR_LIMITS,
            }

        self._supervisor = Supervisor(build_bootstrap, redactor=self.redactor)
        try:
            await self._supervisor.start(SIDECAR_START_TIMEOUT_S)
        except KeysideError as error:
            await self._cleanup()
            raise SidecarStartError(error.message, reason=error.reason, fix=error.fix) from None
        except BaseException:
            await self._cleanup()
            raise
        credentials = self._supervisor.credentials()
        if credentials is None:
            await self._cleanup()
            raise SidecarStartError("The supervisor reported the sidecar ready without a port and token.")
        base_url, token = credentials
        port = int(base_url.rsplit(":", 1)[1])
        logger.info("self-test sidecar ready port=%d", port)
        self.target = Target(port, token, keys, self.upstreams, self.app_origins, log_dir)
        return self.target

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self._cleanup()

    async def stop_sidecar(self) -> None:
        """Stop the sidecar but keep its log folder, so the log can still be read."""
        if self._supervisor is not None:
            await self._supervisor.stop()
            self._supervisor = None

    async def _cleanup(self) -> None:
        await self.stop_sidecar()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

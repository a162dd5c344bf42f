"""The sidecar's configuration, read from the host's bootstrap message and checked field by field.

The host builds the bootstrap from a validated manifest, so a failure here means a host bug or a
message from something that is not the host. Every check raises BootstrapError naming the field,
and no error message ever contains a secret value or a token.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keyside.errors import KeysideError
from keyside.manifest import (
    ALLOWED_METHODS,
    HEADER_NAME_PATTERN,
    LABEL_PATTERN,
    QUERY_PARAM_PATTERN,
    SECRET_NAME_PATTERN,
    InjectSpec,
    ServiceSpec,
    ValidateSpec,
)
from keyside.sidecar.protocol import PROTOCOL_VERSION

# At least 43 URL-safe characters: 256 bits in base64url, and 64 in the hex form the host uses.
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43,256}$")
TOKEN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NONCE_PATTERN = re.compile(r"^[0-9a-fA-F]{32,128}$")
# No real API key is near this length, and header values over 8 KiB are rejected by many servers.
MAX_SECRET_CHARS = 8192
MAX_SERVICES = 64
MAX_ORIGINS = 64
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Outbound timeouts the bootstrap may override (tests use short ones), with their allowed range.
TIMEOUT_FIELDS = ("connect_timeout_s", "read_timeout_s", "total_timeout_s")
MAX_TIMEOUT_S = 3600.0


class BootstrapError(KeysideError):
    """An invalid bootstrap or control message field."""

    reason = "invalid_bootstrap"


@dataclass
class SidecarConfig:
    token: str
    nonce: str
    secrets: dict[str, str]
    services: dict[str, ServiceSpec]
    # Page origins that get CORS grants, normalised as scheme://host[:port].
    origins: frozenset[str]
    preferred_port: int = 0
    allow_private: frozenset[tuple[str, int]] = frozenset()
    nameservers: tuple[tuple[str, int], ...] = ()
    log_dir: Path | None = None
    log_level: str = "INFO"
    # Overrides of outbound timeouts, by TIMEOUT_FIELDS name, in seconds.
    timeouts: dict[str, float] = field(default_factory=dict)


def _fail(key: str, problem: str) -> BootstrapError:
    return BootstrapError(f"bootstrap field {key}: {problem}.",
                          fix="start the sidecar through the keyside host, which writes a valid bootstrap")


def check_token(value: Any, reason: str = "invalid_bootstrap") -> str:
    """Return `value` when it is a well-formed token, else raise BootstrapError (never echoing it)."""
    if not isinstance(value, str) or not TOKEN_PATTERN.match(value):
        raise BootstrapError("The token is malformed: expected 43 to 256 characters from A-Z, a-z, 0-9, "
                             "'_' and '-'.", reason=reason,
                             fix="generate tokens with secrets.token_hex(32), as the keyside host does")
    return value


def check_secret_value(name: Any, value: Any) -> tuple[str, str]:
    """Return (name, value) for a storable secret, else raise BootstrapError (never echoing the value).

    A value with control or non-ASCII characters could split or corrupt the header it is injected
    into, and API keys never contain them.
    """
    if not isinstance(name, str) or not SECRET_NAME_PATTERN.match(name):
        raise BootstrapError(f"secret name {str(name)[:80]!r} is invalid.", reason="invalid_secret_name",
                             fix="use upper-case letters, digits and '_', starting with a letter")
    if not isinstance(value, str) or not value:
        raise BootstrapError(f"value of secret {name} is missing or not a string.",
                             reason="invalid_secret_value", fix="send the key as a non-empty string")
    if len(value) > MAX_SECRET_CHARS:
        raise BootstrapError(f"value of secret {name} is longer than {MAX_SECRET_CHARS} characters.",
                             reason="invalid_secret_value", fix="check that the whole key and nothing else was pasted")
    if any(not 0x20 <= ord(char) <= 0x7E for char in value):
        raise BootstrapError(f"value of secret {name} contains control or non-ASCII characters.",
                             reason="invalid_secret_value",
                             fix="remove line breaks, tabs and other invisible characters from the key")
    return name, value


def normalise_origin(value: Any, key: str = "origins") -> str:
    """Return an origin as a browser serialises it: lower-case scheme://host[:port], no default port."""
    if not isinstance(value, str):
        raise _fail(key, f"expected an origin string, got {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(key, f"{value[:100]!r} is not an http or https origin")
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _fail(key, f"{value[:100]!r} has user information, a path or a query")
    try:
        port = parts.port
    except ValueError:
        raise _fail(key, f"{value[:100]!r} has an invalid port") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    if port is None or port == default_port:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _host_port(value: Any, key: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", value) \
        if isinstance(value, str) else None
    if not match:
        raise _fail(key, f"{str(value)[:100]!r} is not host:port")
    host = (match.group(1) or match.group(3)).lower()
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise _fail(key, f"port {port} is out of range")
    return host, port


def _nameserver(value: Any, key: str) -> tuple[str, int]:
    host, port = _host_port(value, key)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _fail(key, f"{host!r} is not an IP address") from None
    return host, port


def _inject(data: Any, key: str) -> InjectSpec:
    if not isinstance(data, dict) or data.get("kind") not in ("header", "bearer", "query", "basic", "path"):
        raise _fail(key, "expected an object with kind header, bearer, query, basic or path")
    kind = data["kind"]
    name = data.get("name")
    if kind == "header" and not (isinstance(name, str) and HEADER_NAME_PATTERN.match(name)):
        raise _fail(f"{key}.name", "expected a header name")
    if kind == "query" and not (isinstance(name, str) and QUERY_PARAM_PATTERN.match(name)):
        raise _fail(f"{key}.name", "expected a query parameter name")
    template = data.get("template")
    if kind == "path" and not (isinstance(template, str) and template.startswith("/")
                               and template.count("{key}") == 1 and "?" not in template):
        raise _fail(f"{key}.template", "expected a path starting with / that contains {key} once")
    username = data.get("username")
    if username is not None and (not isinstance(username, str) or ":" in username
                                 or any(not 0x20 < ord(c) < 0x7F for c in username)):
        raise _fail(f"{key}.username", "expected printable ASCII without ':'")
    return InjectSpec(kind, name=name if kind in ("header", "query") else None,
                      username=username if kind == "basic" else None,
                      template=template if kind == "path" else None)


def _paths(data: Any, key: str) -> tuple[str, ...]:
    if not isinstance(data, list) or not data:
        raise _fail(key, "expected a non-empty list of path prefixes")
    for prefix in data:
        if not isinstance(prefix, str) or not prefix.startswith("/") or "//" in prefix or "?" in prefix \
                or "%" in prefix or "\\" in prefix or "/../" in f"{prefix}/" or "/./" in f"{prefix}/":
            raise _fail(key, f"{str(prefix)[:100]!r} is not a plain path prefix")
    return tuple(data)


def parse_service(data: Any, index: int) -> ServiceSpec:
    """Build a ServiceSpec from one entry of the bootstrap's `services` list."""
    key = f"services[{index}]"
    if not isinstance(data, dict):
        raise _fail(key, "expected an object")
    name = data.get("name")
    if not isinstance(name, str) or not LABEL_PATTERN.match(name):
        raise _fail(f"{key}.name", "expected a service name")
    key = f"services.{name}"

    upstream = data.get("upstream")
    parts = urlsplit(upstream) if isinstance(upstream, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
            or parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _fail(f"{key}.upstream", "expected an http or https origin")
    upstream = f"{parts.scheme}://{parts.netloc.lower()}"

    secret = data.get("secret")
    if secret is not None and not (isinstance(secret, str) and SECRET_NAME_PATTERN.match(secret)):
        raise _fail(f"{key}.secret", "expected a secret name or null")
    inject = _inject(data["inject"], f"{key}.inject") if data.get("inject") is not None else None
    if (secret is None) != (inject is None):
        raise _fail(key, "`secret` and `inject` must be given together")

    methods = data.get("methods")
    if not isinstance(methods, list) or not methods or any(m not in ALLOWED_METHODS for m in methods):
        raise _fail(f"{key}.methods", f"expected a list of {', '.join(ALLOWED_METHODS)}")
    paths = _paths(data.get("paths"), f"{key}.paths")

    allow_private = data.get("allow_private_network", False)
    if not isinstance(allow_private, bool):
        raise _fail(f"{key}.allow_private_network", "expected true or false")

    validate = None
    if data.get("validate") is not None:
        spec = data["validate"]
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not spec["path"].startswith("/") \
                or spec.get("method", "GET") not in ALLOWED_METHODS \
                or not isinstance(spec.get("status", 200), int) or not 100 <= spec.get("status", 200) <= 599:
            raise _fail(f"{key}.validate", "expected {path, method, status}")
        validate = ValidateSpec(spec["path"], spec.get("method", "GET"), spec.get("status", 200))

    client_key_header = data.get("client_key_header")
    if client_key_header is not None and not (isinstance(client_key_header, str)
                                              and HEADER_NAME_PATTERN.match(client_key_header)):
        raise _fail(f"{key}.client_key_header", "expected a header name or null")

    return ServiceSpec(name, upstream, secret, inject, tuple(methods), paths, allow_private, validate,
                       client_key_header.lower() if client_key_header else None)


def _timeouts(data: Any) -> dict[str, float]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _fail("limits", "expected an object")
    timeouts: dict[str, float] = {}
    for name, value in data.items():
        if name not in TIMEOUT_FIELDS:
            raise _fail(f"limits.{name}", f"unknown field, use one of {', '.join(TIMEOUT_FIELDS)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_S:
            raise _fail(f"limits.{name}", f"expected seconds from 0 to {MAX_TIMEOUT_S:g}")
        timeouts[name] = float(value)
    return timeouts


def parse_bootstrap(message: dict[str, Any]) -> SidecarConfig:
    """Check a decoded bootstrap message and build the SidecarConfig."""
    if message.get("type") != "bootstrap":
        raise _fail("type", "the first message must be the bootstrap")
    if message.get("version") != PROTOCOL_VERSION:
        raise _fail("version", f"this sidecar speaks protocol version {PROTOCOL_VERSION}")
    token = check_token(message.get("token"))
    nonce = message.get("nonce")
    if not isinstance(nonce, str) or not NONCE_PATTERN.match(nonce):
        raise _fail("nonce", "expected 32 to 128 hex digits")

    raw_secrets = message.get("secrets", {})
    if not isinstance(raw_secrets, dict):
        raise _fail("secrets", "expected an object of name to value")
    secrets = dict(check_secret_value(name, value) for name, value in raw_secrets.items())

    raw_services = message.get("services", [])
    if not isinstance(raw_services, list) or len(raw_services) > MAX_SERVICES:
        raise _fail("services", f"expected a list of at most {MAX_SERVICES} services")
    services: dict[str, ServiceSpec] = {}
    for index, data in enumerate(raw_services):
        service = parse_service(data, index)
        if service.name in services:
            raise _fail(f"services.{service.name}", "defined twice")
        services[service.name] = service

    raw_origins = message.get("origins", [])
    if not isinstance(raw_origins, list) or len(raw_origins) > MAX_ORIGINS:
        raise _fail("origins", f"expected a list of at most {MAX_ORIGINS} origins")
    origins = frozenset(normalise_origin(origin) for origin in raw_origins)

    preferred_port = message.get("preferred_port", 0)
    if isinstance(preferred_port, bool) or not isinstance(preferred_port, int) or not 0 <= preferred_port < 65536:
        raise _fail("preferred_port", "expected an integer from 0 to 65535")

    allow_private = message.get("allow_private", [])
    nameservers = message.get("nameservers", [])
    if not isinstance(allow_private, list) or not isinstance(nameservers, list):
        raise _fail("allow_private", "allow_private and nameservers must be lists of host:port")

    log_dir = message.get("log_dir")
    if log_dir is not None and (not isinstance(log_dir, str) or not Path(log_dir).is_absolute()):
        raise _fail("log_dir", "expected an absolute path or null")
    log_level = message.get("log_level", "INFO")
    if log_level not in LOG_LEVELS:
        raise _fail("log_level", f"expected one of {', '.join(LOG_LEVELS)}")

    return SidecarConfig(
        token=token,
        nonce=nonce,
        secrets=secrets,
        services=services,
        origins=origins,
        preferred_port=preferred_port,
        allow_private=frozenset(_host_port(v, "allow_private") for v in allow_private),
        nameservers=tuple(_nameserver(v, "nameservers") for v in nameservers),
        log_dir=Path(log_dir) if log_dir else None,
        log_level=log_level,
        timeouts=_timeouts(message.get("limits")),
    )

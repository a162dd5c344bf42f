"""The app manifest, `keyside.toml`: what an app is, which secrets it may store, its windows
and the upstream services its keys are bound to.

Loading validates every field and raises ManifestError naming the file, the key and the fix,
so a bad manifest fails at start and never half-configures a running app.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keyside.errors import ManifestError

MANIFEST_FILENAME = "keyside.toml"
DEFAULT_APP = "monitor"

# Each pattern ends in \Z, not $, because $ also matches before a final line break, which
# would let a quoted TOML key such as [secrets."KEY\n"] through.
APP_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
# Upper-case environment-variable style, so a name reads the same in the CLI, the vault and logs.
SECRET_NAME_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,63}\Z")
LABEL_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
# RFC 9110 token characters, without the ones that never appear in real header names.
HEADER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}\Z")
QUERY_PARAM_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
# An upstream host: an ASCII name (IDNs in punycode) or an IP literal. urlsplit lower-cases it.
UPSTREAM_HOST_PATTERN = re.compile(r"^(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|[0-9a-f:.]+)\Z")

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
INJECT_KINDS = ("header", "bearer", "query", "basic", "path")
MAX_DESCRIPTION_CHARS = 500


@dataclass(frozen=True)
class SecretSpec:
    name: str
    description: str


@dataclass(frozen=True)
class WindowSpec:
    label: str
    page: str
    title: str
    capabilities: tuple[str, ...]
    width: int = 1100
    height: int = 760


@dataclass(frozen=True)
class InjectSpec:
    """The placement of a key in an upstream request.

    kind `header`: the key is the value of header `name`. `bearer`: `Authorization: Bearer <key>`.
    `query`: the key is query parameter `name`. `basic`: HTTP Basic, with `username` as the user and
    the key as the password, or the key as the user and an empty password when `username` is None.
    `path`: `template` (containing `{key}`) is put before the forwarded path.
    """

    kind: str
    name: str | None = None
    username: str | None = None
    template: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ValidateSpec:
    """The request that checks a key: `method path`. The key is valid when the request returns `status`."""

    path: str
    method: str = "GET"
    status: int = 200


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    upstream: str  # an origin: scheme://host[:port], no path, query or userinfo
    secret: str | None  # None for a service that needs no key (a local model server)
    inject: InjectSpec | None
    methods: tuple[str, ...]
    paths: tuple[str, ...]
    allow_private_network: bool = False
    validate: ValidateSpec | None = None
    # A header where SDKs put their API key (e.g. `x-api-key`); `keyside exec` tokens are accepted
    # there as well as in `Authorization: Bearer`.
    client_key_header: str | None = None

    @property
    def upstream_host(self) -> str:
        return urlsplit(self.upstream).hostname or ""

    @property
    def upstream_port(self) -> int:
        parts = urlsplit(self.upstream)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def to_dict(self) -> dict[str, Any]:
        """Return the service as a JSON object for the sidecar bootstrap message."""
        return {
            "name": self.name,
            "upstream": self.upstream,
            "secret": self.secret,
            "inject": self.inject.to_dict() if self.inject else None,
            "methods": list(self.methods),
            "paths": list(self.paths),
            "allow_private_network": self.allow_private_network,
            "validate": dict(self.validate.__dict__) if self.validate else None,
            "client_key_header": self.client_key_header,
        }


@dataclass(frozen=True)
class NetworkSpec:
    # Explicit private `host:port` pairs the outbound guard may dial (a local feed, a test upstream).
    allow_private: tuple[str, ...] = ()
    # DNS servers (`ip:port`) the guard queries instead of the OS resolver; empty means the OS resolver.
    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    path: Path
    app_id: str
    name: str
    pages_dir: Path
    secrets: dict[str, SecretSpec]
    windows: dict[str, WindowSpec]
    services: dict[str, ServiceSpec]
    network: NetworkSpec = field(default_factory=NetworkSpec)
    # Public settings passed to pages (feed lists, watchlists); never secrets.
    ui: dict[str, Any] = field(default_factory=dict)

    @property
    def keyring_service(self) -> str:
        return f"keyside.{self.app_id}"

    def require_secret(self, name: str) -> SecretSpec:
        """Return the spec for an allow-listed secret name, or raise ManifestError."""
        spec = self.secrets.get(name)
        if spec is None:
            allowed = ", ".join(sorted(self.secrets)) or "(none)"
            raise ManifestError(
                f"Secret name {name!r} is not declared in {self.path}.",
                reason="unknown_secret",
                fix=f"Use one of: {allowed}, or add [secrets.{name}] to the manifest.",
            )
        return spec


def _fail(path: Path, key: str, problem: str, fix: str) -> ManifestError:
    return ManifestError(f"{path}: {key}: {problem}.", fix=fix)


class _Table:
    """A TOML table with the path of its key, for error messages and unknown-key checks."""

    def __init__(self, path: Path, key: str, data: Any):
        if not isinstance(data, dict):
            raise _fail(path, key, f"expected a table, got {type(data).__name__}",
                        f"write it as [{key}] with key = value lines")
        self.path = path
        self.key = key
        self.data = data

    def reject_unknown(self, allowed: set[str]) -> None:
        for name in self.data:
            if name not in allowed:
                raise _fail(self.path, f"{self.key}.{name}", "unknown key",
                            f"remove it or use one of: {', '.join(sorted(allowed))}")

    def get_str(self, name: str, default: str | None = None, *, required: bool = False,
                max_chars: int = 200) -> str | None:
        value = self.data.get(name, default)
        if value is None:
            if required:
                raise _fail(self.path, f"{self.key}.{name}", "missing",
                            f'add {name} = "..." to [{self.key}]')
            return None
        if not isinstance(value, str) or not value.strip():
            raise _fail(self.path, f"{self.key}.{name}", f"expected a non-empty string, got {value!r}",
                        f'write {name} = "..."')
        if len(value) > max_chars:
            raise _fail(self.path, f"{self.key}.{name}", f"longer than {max_chars} characters",
                        "shorten it")
        if any(ord(c) < 0x20 and c not in "\t" for c in value):
            raise _fail(self.path, f"{self.key}.{name}", "contains control characters",
                        "remove line breaks and control characters")
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise _fail(self.path, f"{self.key}.{name}", f"expected true or false, got {value!r}",
                        f"write {name} = true or {name} = false")
        return value

    def get_int(self, name: str, default: int, low: int, high: int) -> int:
        value = self.data.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _fail(self.path, f"{self.key}.{name}", f"expected an integer from {low} to {high}, "
                        f"got {value!r}", f"write {name} = {default}")
        return value

    def get_str_list(self, name: str, default: list[str]) -> list[str]:
        value = self.data.get(name, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise _fail(self.path, f"{self.key}.{name}", f"expected a list of strings, got {value!r}",
                        f'write {name} = ["..."]')
        return value


def _check_origin(path: Path, key: str, value: str) -> str:
    parts = urlsplit(value)
    fix = 'write an origin such as "https://api.example.com" or "http://127.0.0.1:11434"'
    if parts.scheme not in ("http", "https"):
        raise _fail(path, key, f"scheme of {value!r} is not http or https", fix)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _fail(path, key, f"{value!r} contains user information", fix)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _fail(path, key, f"{value!r} has a path, query or fragment",
                    "put path prefixes in `paths` and keep `upstream` an origin")
    if not parts.hostname:
        raise _fail(path, key, f"{value!r} has no host", fix)
    if not UPSTREAM_HOST_PATTERN.match(parts.hostname):
        raise _fail(path, key, f"host {parts.hostname!r} of {value!r} is not a valid host name or IP address",
                    "use letters, digits, '-' and '.', and write an internationalized name in punycode (xn--...)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _fail(path, key, f"{value!r} has an invalid port", fix) from None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _is_private_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


def _check_host_port(path: Path, key: str, value: str) -> str:
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})", value)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise _fail(path, key, f"{value!r} is not host:port",
                    'write "127.0.0.1:8080" or "[::1]:8080" or "nas.local:8080"')
    return f"{match.group(1).lower()}:{int(match.group(2))}"


def _check_nameserver(path: Path, key: str, value: str) -> str:
    """Validate a DNS server as ip:port; a host name would need a resolver to find the resolver."""
    host_port = _check_host_port(path, key, value)
    host = host_port.rsplit(":", 1)[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _fail(path, key, f"{value!r} names a host, not an IP address",
                    'write the DNS server as "127.0.0.1:53" or "[::1]:53"') from None
    return host_port


def _load_inject(path: Path, key: str, data: Any) -> InjectSpec:
    table = _Table(path, key, data)
    table.reject_unknown({"header", "bearer", "query", "basic", "path", "username"})
    kinds = [k for k in INJECT_KINDS if k in table.data]
    if len(kinds) != 1:
        raise _fail(path, key, f"expected exactly one of {', '.join(INJECT_KINDS)}, got {kinds or 'none'}",
                    'write inject = { header = "X-Api-Key" } or { bearer = true } or { query = "api_key" }')
    kind = kinds[0]

    if "username" in table.data and kind != "basic":
        raise _fail(path, f"{key}.username", f"applies only to basic, not to {kind}",
                    "remove username, or use inject = { basic = true, username = \"...\" }")

    if kind == "header":
        name = table.get_str("header", required=True)
        if not HEADER_NAME_PATTERN.match(name or "") or name.lower() in ("host", "cookie"):
            raise _fail(path, f"{key}.header", f"{name!r} is not a usable header name",
                        'use a header name such as "X-Api-Key"')
        return InjectSpec("header", name=name)

    if kind == "query":
        name = table.get_str("query", required=True)
        if not QUERY_PARAM_PATTERN.match(name or ""):
            raise _fail(path, f"{key}.query", f"{name!r} is not a usable query parameter name",
                        'use letters, digits, "_", "." or "-", such as "api_key"')
        return InjectSpec("query", name=name)

    if kind == "path":
        template = table.get_str("path", required=True)
        if not template.startswith("/") or template.count("{key}") != 1 or "?" in template:
            raise _fail(path, f"{key}.path", f"{template!r} must start with / and contain {{key}} once",
                        'write path = "/bot{key}"')
        return InjectSpec("path", template=template)

    # bearer and basic take `true`, and basic may name a username.
    if table.data[kind] is not True:
        raise _fail(path, f"{key}.{kind}", f"expected true, got {table.data[kind]!r}",
                    f"write {kind} = true")
    if kind == "basic":
        return InjectSpec("basic", username=table.get_str("username"))
    return InjectSpec("bearer")


def _load_service(path: Path, name: str, data: Any, secrets: dict[str, SecretSpec]) -> ServiceSpec:
    key = f"services.{name}"
    if not LABEL_PATTERN.match(name):
        raise _fail(path, key, "invalid service name",
                    "use lower-case letters, digits, '-' and '_', starting with a letter")
    table = _Table(path, key, data)
    table.reject_unknown({"upstream", "secret", "inject", "methods", "paths",
                          "allow_private_network", "validate", "client_key_header"})
    upstream = _check_origin(path, f"{key}.upstream", table.get_str("upstream", required=True))
    secret = table.get_str("secret")
    if secret is not None and secret not in secrets:
        raise _fail(path, f"{key}.secret", f"{secret!r} is not declared",
                    f"add [secrets.{secret}] or use one of: {', '.join(sorted(secrets)) or '(none)'}")
    inject = _load_inject(path, f"{key}.inject", table.data["inject"]) if "inject" in table.data else None
    if (secret is None) != (inject is None):
        raise _fail(path, key, "`secret` and `inject` must be given together",
                    "name the secret and how it is injected, or neither for a keyless service")

    methods = [m.upper() for m in table.get_str_list("methods", ["GET"])]
    if not methods:
        raise _fail(path, f"{key}.methods", "the list is empty, so no request could be made",
                    'list the allowed methods, such as methods = ["GET"]')
    for method in methods:
        if method not in ALLOWED_METHODS:
            raise _fail(path, f"{key}.methods", f"{method!r} is not allowed",
                        f"use some of: {', '.join(ALLOWED_METHODS)}")
    paths = table.get_str_list("paths", ["/"])
    if not paths:
        raise _fail(path, f"{key}.paths", "the list is empty, so no path could be requested",
                    'list the allowed path prefixes, such as paths = ["/v1/"]')
    for prefix in paths:
        if not prefix.startswith("/") or "//" in prefix or "/../" in f"{prefix}/" or "?" in prefix \
                or "%" in prefix or "\\" in prefix or "#" in prefix \
                or any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in prefix):
            raise _fail(path, f"{key}.paths", f"{prefix!r} is not a plain path prefix",
                        'write prefixes such as "/v1/" that start with "/"')

    allow_private = table.get_bool("allow_private_network", False)
    host = urlsplit(upstream).hostname or ""
    if _is_private_host(host) and not allow_private:
        raise _fail(path, f"{key}.upstream", f"{upstream} is a loopback or private address",
                    "set allow_private_network = true if this is an intended local server")
    if allow_private and not _is_private_host(host):
        raise _fail(path, f"{key}.allow_private_network",
                    f"only an upstream given as localhost or a private IP literal may be allowed, not {host!r}",
                    "remove allow_private_network, or give the upstream as an IP address")

    validate = None
    if "validate" in table.data:
        vt = _Table(path, f"{key}.validate", table.data["validate"])
        vt.reject_unknown({"path", "method", "status"})
        vpath = vt.get_str("path", required=True)
        vmethod = (vt.get_str("method", "GET") or "GET").upper()
        if vmethod not in methods:
            raise _fail(path, f"{key}.validate.method", f"{vmethod} is not in the service's methods",
                        "add it to `methods` or change the validation method")
        if not vpath.startswith("/") or not any(vpath.split("?")[0].startswith(p) for p in paths):
            raise _fail(path, f"{key}.validate.path", f"{vpath!r} is not under an allowed path prefix",
                        "use a path under one of the service's `paths`")
        validate = ValidateSpec(vpath, vmethod, vt.get_int("status", 200, 100, 599))

    client_key_header = table.get_str("client_key_header")
    if client_key_header is not None and (
        not HEADER_NAME_PATTERN.match(client_key_header)
        or client_key_header.lower() in ("host", "cookie", "authorization")
    ):
        raise _fail(path, f"{key}.client_key_header", f"{client_key_header!r} is not a usable header",
                    'use the header your SDK sends its key in, such as "x-api-key"')

    return ServiceSpec(name, upstream, secret, inject, tuple(methods), tuple(paths), allow_private,
                       validate, client_key_header.lower() if client_key_header else None)


def _load_window(path: Path, label: str, data: Any, app_name: str, pages_dir: Path) -> WindowSpec:
    key = f"windows.{label}"
    if not LABEL_PATTERN.match(label):
        raise _fail(path, key, "invalid window label",
                    "use lower-case letters, digits, '-' and '_', starting with a letter")
    table = _Table(path, key, data)
    table.reject_unknown({"page", "title", "capabilities", "width", "height"})
    page = table.get_str("page", required=True)
    if page.startswith("/") or "\\" in page or ".." in Path(page).parts or "?" in page:
        raise _fail(path, f"{key}.page", f"{page!r} must be a relative path inside the pages folder",
                    'write page = "index.html"')
    if not (pages_dir / page).is_file():
        raise _fail(path, f"{key}.page", f"{pages_dir / page} does not exist",
                    "create the page or correct the path")
    capabilities = table.get_str_list("capabilities", [])
    for capability in capabilities:
        if not LABEL_PATTERN.match(capability):
            raise _fail(path, f"{key}.capabilities", f"{capability!r} is not a capability name",
                        'use names such as "data" or "secrets"')
    return WindowSpec(label, page, table.get_str("title", app_name) or app_name, tuple(capabilities),
                      table.get_int("width", 1100, 200, 10000), table.get_int("height", 760, 200, 10000))


def parse_manifest(path: Path, data: dict[str, Any]) -> Manifest:
    """Validate parsed TOML `data` read from `path` and build a Manifest."""
    root = _Table(path, "(top level)", data)
    root.reject_unknown({"app", "secrets", "windows", "services", "network", "ui"})
    if "app" not in data:
        raise _fail(path, "app", "missing", 'add [app] with id = "my-app" and name = "My App"')
    app = _Table(path, "app", data["app"])
    app.reject_unknown({"id", "name", "pages"})
    app_id = app.get_str("id", required=True)
    if not APP_ID_PATTERN.match(app_id):
        raise _fail(path, "app.id", f"{app_id!r} is not a valid id",
                    "use lower-case letters, digits, '.', '_' and '-' (at most 64)")
    name = app.get_str("name", required=True)
    pages_dir = (path.parent / (app.get_str("pages", "pages") or "pages")).resolve()

    secrets: dict[str, SecretSpec] = {}
    for secret_name, secret_data in _Table(path, "secrets", data.get("secrets", {})).data.items():
        if not SECRET_NAME_PATTERN.match(secret_name):
            raise _fail(path, f"secrets.{secret_name}", "invalid secret name",
                        "use upper-case letters, digits and '_', starting with a letter (OPENAI_API_KEY)")
        table = _Table(path, f"secrets.{secret_name}", secret_data)
        table.reject_unknown({"description"})
        description = table.get_str("description", required=True, max_chars=MAX_DESCRIPTION_CHARS)
        secrets[secret_name] = SecretSpec(secret_name, description)

    services = {
        service_name: _load_service(path, service_name, service_data, secrets)
        for service_name, service_data in _Table(path, "services", data.get("services", {})).data.items()
    }
    windows = {
        label: _load_window(path, label, window_data, name, pages_dir)
        for label, window_data in _Table(path, "windows", data.get("windows", {})).data.items()
    }

    network_table = _Table(path, "network", data.get("network", {}))
    network_table.reject_unknown({"allow_private", "nameservers"})
    network = NetworkSpec(
        tuple(_check_host_port(path, "network.allow_private", v)
              for v in network_table.get_str_list("allow_private", [])),
        tuple(_check_nameserver(path, "network.nameservers", v)
              for v in network_table.get_str_list("nameservers", [])),
    )
    ui = _Table(path, "ui", data.get("ui", {})).data
    return Manifest(path, app_id, name, pages_dir, secrets, windows, services, network, ui)


def bundled_app_dir(app_id: str) -> Path | None:
    """Return the folder of an app that ships inside the keyside package, or None."""
    candidate = Path(str(resources.files("keyside") / "apps" / app_id))
    return candidate if (candidate / MANIFEST_FILENAME).is_file() else None


def resolve_manifest_path(app: str | Path | None) -> Path:
    """Find the manifest for `--app`: a folder, a keyside.toml file, or a bundled app id.

    With no value, ./keyside.toml is used when it exists, else the bundled monitor app.
    """
    if app is None:
        local = Path.cwd() / MANIFEST_FILENAME
        if local.is_file():
            return local
        app = DEFAULT_APP
    candidate = Path(app).expanduser()
    if candidate.is_dir():
        candidate = candidate / MANIFEST_FILENAME
    if candidate.is_file():
        return candidate.resolve()
    bundled = bundled_app_dir(str(app)) if APP_ID_PATTERN.match(str(app)) else None
    if bundled is not None:
        return bundled / MANIFEST_FILENAME
    raise ManifestError(f"No app manifest found for {str(app)!r}.", reason="manifest_not_found",
                        fix=f"Pass a folder containing {MANIFEST_FILENAME}, the file itself, "
                            f"or a bundled app id such as {DEFAULT_APP!r}.")


def load_manifest(app: str | Path | None = None) -> Manifest:
    """Load and validate the manifest for `app` (see resolve_manifest_path)."""
    path = resolve_manifest_path(app)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ManifestError(f"{path}: invalid TOML: {error}.", fix="correct the syntax") from None
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: not UTF-8 text (invalid byte at offset {error.start}).",
                            fix="save the file as UTF-8") from None
    except OSError as error:
        raise ManifestError(f"{path}: cannot read: {error.strerror}.",
                            fix="check that the file exists and is readable") from None
    return parse_manifest(path, data)

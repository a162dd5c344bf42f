"""Service selection and the child's environment for `keyside exec`.

The child gets a base URL and a scoped token in place of keys. A variable inherited from the
parent whose value contains a stored secret value is removed, so a key exported into the shell
before keyside existed does not reach the child either. Variables are matched by value only:
no variable is removed because of its name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from keyside.errors import KeysideError
from keyside.manifest import Manifest, ServiceSpec, bundled_app_dir

logger = logging.getLogger(__name__)

ENV_URL = "KEYSIDE_URL"
ENV_TOKEN = "KEYSIDE_TOKEN"  # noqa: S105 - a variable name, not a credential
# KEYSIDE_URL_<SERVICE>: the sidecar route of one service, e.g. KEYSIDE_URL_OPENAI.
ENV_SERVICE_URL_PREFIX = "KEYSIDE_URL_"
# keyside's own variables that are never passed on. The file vault passphrase, which
# keyside.cli.common reads under this name, decrypts every stored key.
WITHHELD_VARIABLES = ("KEYSIDE_VAULT_PASSPHRASE",)
# The sidecar route under which a service's upstream paths are served.
SERVICE_ROUTE = "/api/svc/"

EXIT_FAILURE = 1

# `keyside secrets set --vault memory` cannot help: its value is gone when that command exits.
MEMORY_VAULT_FIX = ("A memory vault starts empty in every process, so it never has a key here: use --vault system "
                    "(the default) or --vault file.")

# Reasons for ExecError. Ruff's S105 takes names that contain "secret" for passwords, hence the
# noqa marks.
UNKNOWN_SERVICE = "unknown_service"
SECRET_NOT_CONFIGURED = "secret_not_configured"  # noqa: S105
NO_USABLE_SERVICE = "no_usable_service"
SERVICE_NAME_COLLISION = "service_name_collision"
SECRET_IN_ARGUMENTS = "secret_in_arguments"  # noqa: S105
COMMAND_MISSING = "command_missing"
COMMAND_NOT_FOUND = "command_not_found"
COMMAND_NOT_EXECUTABLE = "command_not_executable"


class ExecError(KeysideError):
    """An error that keeps `keyside exec` from running the command, with the CLI's exit code."""

    reason = "exec_failed"

    def __init__(self, message: str, *, reason: str | None = None, fix: str | None = None,
                 exit_code: int = EXIT_FAILURE):
        super().__init__(message, reason=reason, fix=fix)
        self.exit_code = exit_code


class SecretSource(Protocol):
    """The part of a Vault that service selection needs."""

    def is_configured(self, name: str) -> bool: ...


def service_env_name(service: str) -> str:
    """Return the variable that carries a service's base URL: `KEYSIDE_URL_` + the upper-cased
    name with `-` replaced by `_` (`my-llm` gives KEYSIDE_URL_MY_LLM)."""
    return ENV_SERVICE_URL_PREFIX + service.upper().replace("-", "_")


def _is_memory_vault(vault: SecretSource) -> bool:
    return getattr(vault, "kind", None) == "memory"


def _secrets_set_command(manifest: Manifest, secret: str) -> str:
    bundled = bundled_app_dir(manifest.app_id)
    app = manifest.app_id if bundled is not None and bundled == manifest.path.parent else str(manifest.path.parent)
    return f"keyside secrets set {secret} --app {app}"


def select_services(manifest: Manifest, vault: SecretSource,
                    requested: Sequence[str] | None) -> list[ServiceSpec]:
    """Return the services the child's token is scoped to, or raise ExecError.

    With `requested` empty or None, every service that needs no key or whose secret is
    configured is selected. A requested service that is unknown or whose secret is missing
    raises an error that names the command that fixes it. One error reports all such services.
    """
    if not requested:
        return _default_services(manifest, vault)

    unknown = [name for name in requested if name not in manifest.services]
    if unknown:
        known = ", ".join(sorted(manifest.services)) or "(none)"
        raise ExecError(
            f"Unknown service {', '.join(map(repr, unknown))} for app {manifest.app_id!r} ({manifest.path}).",
            reason=UNKNOWN_SERVICE,
            fix=f"Use --service with one of: {known}.",
        )

    selected = [manifest.services[name] for name in dict.fromkeys(requested)]
    missing = [spec for spec in selected if spec.secret is not None and not vault.is_configured(spec.secret)]
    if missing:
        described = ", ".join(f"{spec.name} needs {spec.secret}" for spec in missing)
        commands = "; ".join(_secrets_set_command(manifest, spec.secret or "") for spec in missing)
        if _is_memory_vault(vault):
            fix = f"{MEMORY_VAULT_FIX} Store it with `{commands}` and run keyside exec with the same --vault " \
                  "option, or leave the service out of --service."
        else:
            fix = f"Store it with `{commands}` (and the same --vault options), or leave the service out of --service."
        raise ExecError(f"Secret not configured: {described}.", reason=SECRET_NOT_CONFIGURED, fix=fix)
    _check_env_names(selected)
    return selected


def _default_services(manifest: Manifest, vault: SecretSource) -> list[ServiceSpec]:
    selected: list[ServiceSpec] = []
    for spec in manifest.services.values():
        if spec.secret is None or vault.is_configured(spec.secret):
            selected.append(spec)
        else:
            logger.info("service skipped service=%s secret=%s reason=%s",
                        spec.name, spec.secret, SECRET_NOT_CONFIGURED)
    if not selected:
        secrets = sorted({spec.secret for spec in manifest.services.values() if spec.secret})
        if not secrets:
            raise ExecError(f"App {manifest.app_id!r} ({manifest.path}) declares no services.",
                            reason=NO_USABLE_SERVICE,
                            fix="Add a [services.NAME] table to the manifest.")
        if _is_memory_vault(vault):
            fix = f"{MEMORY_VAULT_FIX} Store a key with `{_secrets_set_command(manifest, secrets[0])}` and run " \
                  "keyside exec with the same --vault option."
        else:
            fix = f"Store a key with `{_secrets_set_command(manifest, secrets[0])}` (and the same --vault options)."
        raise ExecError(
            f"No service of app {manifest.app_id!r} can be used: none of {', '.join(secrets)} is configured.",
            reason=NO_USABLE_SERVICE,
            fix=fix,
        )
    _check_env_names(selected)
    return selected


def _check_env_names(services: Sequence[ServiceSpec]) -> None:
    # `my-llm` and `my_llm` are both valid service names but share KEYSIDE_URL_MY_LLM.
    seen: dict[str, str] = {}
    for spec in services:
        variable = service_env_name(spec.name)
        if variable in seen:
            raise ExecError(
                f"Services {seen[variable]!r} and {spec.name!r} would both set {variable}.",
                reason=SERVICE_NAME_COLLISION,
                fix="Select only one of them with --service, or rename one in the manifest.",
            )
        seen[variable] = spec.name


def check_arguments(command: Sequence[str], secret_values: Iterable[str]) -> None:
    """Raise ExecError when an argument of `command` contains a stored secret value.

    argv is readable by every local user through the process list, so a key typed into the
    command line defeats the purpose. The message names the argument's position, never its text.
    """
    values = [value for value in secret_values if value]
    for position, argument in enumerate(command):
        if any(value in argument for value in values):
            raise ExecError(
                f"Argument {position} of the command contains a stored secret value.",
                reason=SECRET_IN_ARGUMENTS,
                fix=f"Pass ${ENV_TOKEN} (and a KEYSIDE_URL_* base URL) in its place.",
            )


# Reasons for leaving an inherited variable out of the child's environment.
REMOVED_SECRET_VALUE = "its value contains a stored secret"  # noqa: S105
REMOVED_PASSPHRASE = "it carries the file vault passphrase"  # noqa: S105


@dataclass(frozen=True)
class ChildEnvironment:
    """The child's variables, and each inherited variable left out of them with the reason."""

    variables: dict[str, str]
    removed: dict[str, str]

    def __repr__(self) -> str:
        # The variables contain the token, which a repr in a log or traceback must not show.
        return f"ChildEnvironment(variables=<{len(self.variables)} variables>, removed={self.removed!r})"


def build_child_env(parent_env: Mapping[str, str], *, secret_values: Iterable[str], sidecar_url: str,
                    token: str, services: Sequence[str]) -> ChildEnvironment:
    """Return the child's environment: `parent_env` without variables that contain a stored
    secret value, the vault passphrase or stale KEYSIDE_URL* and KEYSIDE_TOKEN settings, plus
    KEYSIDE_URL, KEYSIDE_TOKEN and one KEYSIDE_URL_<SERVICE> per service."""
    values = [value for value in secret_values if value]
    base_url = sidecar_url.rstrip("/")

    variables: dict[str, str] = {}
    removed: dict[str, str] = {}
    for name, value in sorted(parent_env.items()):
        if name in WITHHELD_VARIABLES:
            removed[name] = REMOVED_PASSPHRASE
            continue
        if any(secret in value for secret in values):
            removed[name] = REMOVED_SECRET_VALUE
            continue
        # A `keyside exec` inside another one must not leave the outer run's URLs for services
        # this child has no token for.
        if name in (ENV_URL, ENV_TOKEN) or name.startswith(ENV_SERVICE_URL_PREFIX):
            continue
        variables[name] = value

    variables[ENV_URL] = base_url
    variables[ENV_TOKEN] = token
    for service in services:
        variables[service_env_name(service)] = f"{base_url}{SERVICE_ROUTE}{service}"
    return ChildEnvironment(variables, removed)

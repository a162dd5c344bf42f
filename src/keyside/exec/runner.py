"""`keyside exec` from start to exit: vault, host, scoped token, child, cleanup."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Protocol

from keyside.exec.child import Interrupted, SignalRelay, end_with_signal, run_child
from keyside.exec.environment import (
    COMMAND_MISSING,
    ExecError,
    build_child_env,
    check_arguments,
    select_services,
)
from keyside.manifest import Manifest

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
# Longer than the supervisor's handshake timeout (10 s), so that a sidecar that never gets
# ready fails with the supervisor's own error, which names the cause.
SIDECAR_START_TIMEOUT_S = 15.0


class ExecVault(Protocol):
    """The part of keyside.vault.Vault that `keyside exec` uses."""

    def load(self) -> None: ...

    def is_configured(self, name: str) -> bool: ...

    def snapshot(self) -> dict[str, str]: ...


class ExecHost(Protocol):
    """The part of keyside.host.Host that `keyside exec` uses."""

    @property
    def sidecar_url(self) -> str | None: ...

    def start(self, timeout_s: float = ...) -> None: ...

    def issue_exec_token(self, services: list[str]) -> tuple[str, str]: ...

    def revoke_exec_token(self, token_id: str) -> None: ...

    def stop(self) -> None: ...


HostFactory = Callable[[Manifest, Any], ExecHost]


def reserve_loopback_port() -> int:
    """Return a port that is free on 127.0.0.1 at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _default_host_factory(manifest: Manifest, vault: Any) -> ExecHost:
    from keyside.host import Host

    # The child reads the sidecar URL from its environment once. A sidecar restarted after a
    # crash binds the preferred port again, so the child's URL keeps working. If another
    # process takes the port in between, the sidecar falls back to a new port and the child's
    # calls fail. The restarted sidecar still proves itself to the host before it gets a token.
    return Host(manifest, vault, preferred_port=reserve_loopback_port())


def run_exec(manifest: Manifest, vault: ExecVault, command: Sequence[str], *,
             services: Sequence[str] | None = None, parent_env: Mapping[str, str] | None = None,
             host_factory: HostFactory | None = None, stderr: IO[str] | None = None) -> int:
    """Run `command` with a sidecar URL and a token scoped to `services`, and return its exit code.

    Raises ExecError (with the exit code to use) when a service or its secret is missing, an
    argument contains a stored secret, or the command cannot be started. A relayed signal that
    arrives before the command starts stops the host and gives 128 + the signal number. When
    the command dies of a Ctrl-C or Ctrl-\\ from its terminal, this process ends with the same
    signal after cleanup instead of returning. Must be called from the main thread, because it
    installs signal handlers.
    """
    if not command:
        raise ExecError("No command given.", reason=COMMAND_MISSING,
                        fix="Put the command after `--`, e.g. `keyside exec -- python script.py`.",
                        exit_code=EXIT_USAGE)
    stderr = stderr or sys.stderr
    parent_env = os.environ if parent_env is None else parent_env
    host_factory = host_factory or _default_host_factory

    vault.load()
    selected = select_services(manifest, vault, services)
    names = [spec.name for spec in selected]
    secret_values = list(vault.snapshot().values())
    check_arguments(command, secret_values)

    try:
        with SignalRelay() as relay:
            host = host_factory(manifest, vault)
            try:
                exit_code = _run_with_host(host, relay, command, names, secret_values, parent_env, stderr)
            finally:
                # A signal during cleanup must not cut the sidecar's shutdown short.
                relay.finish()
                host.stop()
        if relay.terminal_signal is not None:
            end_with_signal(relay.terminal_signal)
        return exit_code
    except Interrupted as interrupted:
        name = signal.Signals(interrupted.signum).name
        logger.info("exec interrupted before the command started signal=%s", name)
        print(f"keyside: {name} received before the command started, so nothing was run.", file=stderr)
        return interrupted.exit_code


def _run_with_host(host: ExecHost, relay: SignalRelay, command: Sequence[str], names: list[str],
                   secret_values: list[str], parent_env: Mapping[str, str], stderr: IO[str]) -> int:
    host.start(SIDECAR_START_TIMEOUT_S)
    sidecar_url = host.sidecar_url
    if not sidecar_url:
        raise ExecError("The sidecar started but reported no URL.", reason="sidecar_unavailable",
                        fix="Run `keyside doctor` and check the sidecar log.")

    token_id, token = host.issue_exec_token(names)
    logger.info("exec token issued token_id=%s services=%s url=%s", token_id, ",".join(names), sidecar_url)
    try:
        environment = build_child_env(parent_env, secret_values=secret_values, sidecar_url=sidecar_url,
                                      token=token, services=names)
        for name, reason in environment.removed.items():
            print(f"keyside: {name} is not passed to the command: {reason}.", file=stderr)
        return run_child(command, environment.variables, relay)
    finally:
        _revoke(host, token_id)


def _revoke(host: ExecHost, token_id: str) -> None:
    # The token dies with the sidecar anyway, so a failed revoke must not replace the exit code.
    try:
        host.revoke_exec_token(token_id)
    except Exception as error:  # the error is logged, and stop() runs next
        logger.warning("exec token revoke failed token_id=%s error=%s", token_id, error)
    else:
        logger.info("exec token revoked token_id=%s", token_id)

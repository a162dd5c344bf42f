"""The host: the trusted process that keeps the vault, owns the session token and runs UI calls.

`Host` runs its own asyncio loop in a background thread, so a GUI toolkit can keep the main
thread. The shell calls `invoke` from any thread with the window label it bound and the window's
current URL. Every call passes the window and origin check, the capability check and the
argument check before a handler runs. Calls to audited commands are written to the audit log.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import itertools
import json
import logging
import threading
import time
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keyside import paths
from keyside.errors import KeysideError
from keyside.host.audit import OUTCOME_DENIED, OUTCOME_FAILED, OUTCOME_OK, AuditLog
from keyside.host.channel import SidecarError
from keyside.host.commands import BUILTIN_COMMANDS
from keyside.host.ipc import APP_COMMANDS, CallContext, Command, CommandRegistry, IpcError, check_arguments
from keyside.host.logfiles import HostLogFile
from keyside.host.policy import OriginPolicy, check_call
from keyside.host.secret_manager import SecretManager
from keyside.host.session import new_token
from keyside.host.supervisor import StateListener, Supervisor, SupervisorSettings
from keyside.manifest import Manifest
from keyside.redact import MIN_SECRET_CHARS, Redactor

log = logging.getLogger(__name__)

# An app command that runs longer is reported as failed. A plain-function handler keeps running
# in its worker thread until it returns, because Python cannot stop a thread.
COMMAND_TIMEOUT_S = 60.0
# Time for stop() to end the sidecar and the loop: the sidecar's SIGTERM grace plus slack.
STOP_TIMEOUT_S = 10.0
# Time for a control request made from another thread (exec tokens, origin updates).
CONTROL_WAIT_S = 15.0
# Denied calls are logged at warning level at most this often per window and reason; a page
# in a loop would otherwise flood the log.
DENIAL_LOG_INTERVAL_S = 60.0
DENIAL_LOG_BURST = 5


class _DenialLog:
    """Logs denied calls with a per-(window, reason) rate limit and a count of what was left out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], tuple[float, int, int]] = {}

    def warn(self, window: str, command: str, reason: str) -> None:
        key = (str(window)[:64], reason)
        now = time.monotonic()
        with self._lock:
            started, logged, suppressed = self._windows.get(key, (now, 0, 0))
            if now - started >= DENIAL_LOG_INTERVAL_S:
                started, logged, previous, suppressed = now, 0, suppressed, 0
                if previous:
                    log.warning("ipc denials not logged window=%s reason=%s count=%d", key[0], reason, previous)
            if logged >= DENIAL_LOG_BURST:
                self._windows[key] = (started, logged, suppressed + 1)
                return
            self._windows[key] = (started, logged + 1, suppressed)
        log.warning("ipc call denied window=%s command=%s reason=%s", key[0], str(command)[:64], reason)


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings_in(k) + _strings_in(v)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings_in(item)]
    return []


class Host:
    """The trusted host of one app: vault, session token, sidecar supervisor and UI commands.

    `vault` is a keyside.vault.Vault (or any object with its methods). App commands come from
    `commands` (default: those registered with keyside.host.command). `url_opener` replaces
    webbrowser.open for open_external; `settings` replaces the supervisor's timeouts.
    """

    def __init__(self, manifest: Manifest, vault: Any, *, sidecar_command: list[str] | None = None,
                 preferred_port: int = 0, log_dir: Path | None = None,
                 settings: SupervisorSettings | None = None, commands: CommandRegistry | None = None,
                 url_opener: Callable[[str], Any] | None = None):
        if not isinstance(preferred_port, int) or not 0 <= preferred_port < 65536:
            raise ValueError(f"preferred_port {preferred_port!r} is not a port number from 0 to 65535")
        self.manifest = manifest
        self.vault = vault
        self.log_dir = Path(log_dir) if log_dir is not None else paths.log_dir(manifest.app_id)
        self.url_opener = url_opener or webbrowser.open
        self.redactor = Redactor()
        self.origins = OriginPolicy()
        self._app_commands = APP_COMMANDS if commands is None else commands
        self._supervisor = Supervisor(self._build_bootstrap, command=sidecar_command, preferred_port=preferred_port,
                                      settings=settings, on_launched=self._after_launch, redactor=self.redactor)
        self.secrets = SecretManager(manifest, vault, self._supervisor, self.redactor)
        self._bootstrap_secrets: dict[str, str] = {}
        self._exec_tokens: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._exec_ids = itertools.count(1)
        self._denials = _DenialLog()
        self._lifecycle = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._audit: AuditLog | None = None
        self._log_file: HostLogFile | None = None
        self._started = False
        self._stopped = False

    # -- public state --------------------------------------------------------------------------

    @property
    def sidecar_state(self) -> dict[str, Any]:
        """{"state": starting|ready|restarting|failed|stopped, "reason", "message", "url", "restarts", "pid"}."""
        return self._supervisor.state

    @property
    def sidecar_url(self) -> str | None:
        return self._supervisor.url

    def sidecar_credentials(self) -> tuple[str, str] | None:
        """Return (sidecar base URL, UI token) while the sidecar is ready, else None. Host-internal."""
        return self._supervisor.credentials()

    def on_sidecar_state(self, listener: StateListener) -> None:
        """Call `listener(state)` on the host loop thread whenever the sidecar state changes."""
        self._supervisor.add_listener(listener)

    @property
    def audit_log_path(self) -> Path:
        return self.log_dir / "audit.log"

    # -- page origins --------------------------------------------------------------------------

    def add_page_origin(self, origin: str, window_label: str | None = None) -> None:
        """Allow calls from pages on `origin`, for one window label or (None) for every window.

        The origin is also a CORS origin of the sidecar. Called after start, it updates the
        running sidecar before it returns.
        """
        if window_label is not None and window_label not in self.manifest.windows:
            raise IpcError(f"Window {window_label!r} is not a window of this app.", reason="window_not_allowed",
                           fix="declare it under [windows] in keyside.toml")
        normalized = self.origins.add(origin, window_label)
        log.info("page origin added origin=%s window=%s", normalized, window_label or "*")
        loop = self._loop
        if loop is None or not self._started or self._stopped:
            return
        future = asyncio.run_coroutine_threadsafe(self._push_origins(), loop)
        if threading.current_thread() is not self._thread:
            future.result(CONTROL_WAIT_S)

    async def _push_origins(self) -> None:
        if self._supervisor.state["state"] != "ready":
            return  # the next start sends the current origins in its bootstrap
        try:
            await self._supervisor.request("set_origins", origins=self.origins.all_origins())
        except SidecarError as error:
            # A sidecar without set_origins reads the origins from the bootstrap of a fresh start.
            log.info("sidecar did not take new origins reason=%s; restarting it", error.reason)
            await self._supervisor.restart("origins_changed")

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        """Load the vault, start the sidecar and return when it is ready; raise KeysideError on failure.

        `timeout_s` bounds the sidecar start (`sidecar_start_timeout`). Loading the vault is not
        bounded, because an OS keyring may wait for the user to unlock it. The host's asyncio loop
        runs in a daemon thread from here until stop().
        """
        with self._lifecycle:
            if self._started:
                raise RuntimeError("Host.start() was already called; create a new Host to start again")
            self._started = True
            self._log_file = HostLogFile(self.log_dir, self.redactor)
            self._audit = AuditLog(self.log_dir, self.redactor)
        try:
            self.vault.load()
        except BaseException:
            self._stopped = True
            self._close_logs()
            raise
        for value in self.vault.snapshot().values():
            self.redactor.add(value)

        with self._lifecycle:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._run_loop, name="keyside-host", daemon=True)
            self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start_async(timeout_s), self._loop)
        try:
            # The supervisor enforces timeout_s itself; this wait only guards against a hung loop.
            future.result(timeout_s + STOP_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            self.stop()
            raise SidecarError(f"The sidecar was not ready within {timeout_s:.1f} s.", reason="sidecar_start_timeout",
                               fix="check the host log, or pass a longer timeout") from None
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        log.info("host started app=%s sidecar=%s", self.manifest.app_id, self.sidecar_url)

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            pending = [task for task in asyncio.all_tasks(self._loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _start_async(self, timeout_s: float) -> None:
        self._start_task = asyncio.current_task()
        await self._supervisor.start(timeout_s)

    def stop(self) -> None:
        """Stop the sidecar (SIGTERM, then SIGKILL after a grace period) and the host loop.

        Safe to call more than once, and from atexit.
        """
        with self._lifecycle:
            if not self._started or self._stopped:
                return
            self._stopped = True
        if threading.current_thread() is self._thread:
            raise RuntimeError("Host.stop() cannot run on the host loop thread; call it from another thread")
        atexit.unregister(self.stop)
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._stop_async(), loop)
            try:
                future.result(STOP_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                log.error("host stop timed out timeout_s=%.1f", STOP_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT_S)
        log.info("host stopped app=%s", self.manifest.app_id)
        self._close_logs()

    def _close_logs(self) -> None:
        if self._audit is not None:
            self._audit.close()
        if self._log_file is not None:
            self._log_file.close()

    async def _stop_async(self) -> None:
        start_task = self._start_task
        if start_task is not None and not start_task.done():
            start_task.cancel()
            try:
                await start_task
            except BaseException as error:  # noqa: BLE001 - the start's own error was raised to its caller
                log.info("start ended by stop error=%s", type(error).__name__)
        await self._supervisor.stop()

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or not self._started or self._stopped:
            raise IpcError("The host is not running.", reason="host_not_running", fix="call Host.start() first")
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking Host methods cannot run on the host loop thread; use invoke_async")
        return self._loop

    # -- sidecar bootstrap ---------------------------------------------------------------------

    def _build_bootstrap(self) -> dict[str, Any]:
        snapshot = self.vault.snapshot()
        self._bootstrap_secrets = dict(snapshot)
        for value in snapshot.values():
            self.redactor.add(value)
        network = self.manifest.network
        return {
            "secrets": snapshot,
            "services": [service.to_dict() for service in self.manifest.services.values()],
            "origins": self.origins.all_origins(),
            "allow_private": list(network.allow_private),
            "nameservers": list(network.nameservers),
            "log_dir": str(self.log_dir),
            "log_level": logging.getLevelName(logging.getLogger("keyside").getEffectiveLevel()),
        }

    async def _after_launch(self) -> None:
        # A secret changed while this sidecar was starting, and exec tokens still in use, are
        # sent before the sidecar is marked ready.
        await self.secrets.resync(self._bootstrap_secrets)
        for token_id, (token, services) in list(self._exec_tokens.items()):
            await self._supervisor.request("add_token", token_id=token_id, token=token, services=list(services))

    # -- exec tokens ---------------------------------------------------------------------------

    def issue_exec_token(self, services: list[str]) -> tuple[str, str]:
        """Return (token_id, token) for a token that works only for `services`; it lives until revoked.

        A restarted sidecar gets the live exec tokens again, so a long-running child keeps working.
        """
        if not isinstance(services, list | tuple) or not services:
            raise IpcError("An exec token needs at least one service.", reason="invalid_arguments",
                           fix="pass the service names the program may use")
        unknown = [name for name in services if name not in self.manifest.services]
        if unknown:
            raise IpcError(f"Unknown services: {', '.join(map(str, unknown))}.", reason="unknown_service",
                           fix=f"use some of: {', '.join(self.manifest.services) or '(none)'}")
        loop = self._require_loop()
        token_id, token = f"exec-{next(self._exec_ids)}", new_token()
        self.redactor.add(token)

        async def add() -> None:
            await self._supervisor.request("add_token", token_id=token_id, token=token, services=list(services))
            self._exec_tokens[token_id] = (token, tuple(services))

        asyncio.run_coroutine_threadsafe(add(), loop).result(CONTROL_WAIT_S)
        log.info("exec token issued token_id=%s services=%s", token_id, ",".join(services))
        return token_id, token

    def revoke_exec_token(self, token_id: str) -> None:
        """Revoke an exec token; a sidecar that is not running has no tokens to revoke."""
        loop = self._require_loop()

        async def revoke() -> None:
            self._exec_tokens.pop(token_id, None)
            try:
                await self._supervisor.request("revoke_token", token_id=token_id)
            except SidecarError as error:
                log.info("exec token not revoked in the sidecar token_id=%s reason=%s", token_id, error.reason)

        asyncio.run_coroutine_threadsafe(revoke(), loop).result(CONTROL_WAIT_S)
        log.info("exec token revoked token_id=%s", token_id)

    # -- UI calls ------------------------------------------------------------------------------

    def invoke(self, window_label: str, current_url: str, command: str, args: dict[str, Any] | None = None) -> Any:
        """Run a UI command for a window; thread-safe and blocking. Raise IpcError with a reason.

        `window_label` must be the label the shell bound to the calling window, never a value
        from the page, and `current_url` the window's URL read at the time of the call.
        """
        loop = self._require_loop()
        future = asyncio.run_coroutine_threadsafe(self.invoke_async(window_label, current_url, command, args), loop)
        return future.result()

    def _lookup(self, name: Any) -> Command | None:
        if not isinstance(name, str):
            return None
        return BUILTIN_COMMANDS.get(name) or self._app_commands.get(name)

    async def invoke_async(self, window_label: str, current_url: str, command: str,
                           args: dict[str, Any] | None = None) -> Any:
        """Run a UI command like invoke, awaited on the host loop."""
        spec = self._lookup(command)
        name = args.get("name") if isinstance(args, dict) else None
        secret = name if isinstance(name, str) and name in self.manifest.secrets else None

        try:
            origin = check_call(self.manifest, self.origins, window_label, current_url, command, spec)
            assert spec is not None
            checked = check_arguments(spec, args, self.manifest)
        except IpcError as error:
            self._denials.warn(window_label, command, error.reason)
            self._audit_call(spec, window_label, secret, OUTCOME_DENIED, error.reason)
            raise

        ctx = CallContext(window_label, origin, spec.name, self)
        try:
            result = await self._run_handler(spec, ctx, checked)
            self._check_result(spec, result)
        except KeysideError as error:
            failure = error if isinstance(error, IpcError) else IpcError(error.message, reason=error.reason,
                                                                        fix=error.fix)
            log.info("ipc call failed window=%s command=%s reason=%s", window_label, spec.name, failure.reason)
            self._audit_call(spec, window_label, secret, OUTCOME_FAILED, failure.reason)
            raise failure from None
        except Exception as error:
            log.exception("ipc command raised window=%s command=%s error=%s", window_label, spec.name,
                          type(error).__name__)
            self._audit_call(spec, window_label, secret, OUTCOME_FAILED, "command_failed")
            raise IpcError(f"The command {spec.name} failed ({type(error).__name__}).", reason="command_failed",
                           fix="check the host log") from None
        self._audit_call(spec, window_label, secret, OUTCOME_OK, None)
        return result

    async def _run_handler(self, spec: Command, ctx: CallContext, args: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(spec.handler):
            call = spec.handler(ctx, **args)
        else:
            call = asyncio.to_thread(spec.handler, ctx, **args)
        try:
            return await asyncio.wait_for(call, COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise IpcError(f"The command {spec.name} did not finish within {COMMAND_TIMEOUT_S:.0f} s.",
                           reason="command_timeout", fix="check the host log") from None

    def _check_result(self, spec: Command, result: Any) -> None:
        """Raise IpcError when a result is not plain JSON or contains a secret value, an exec token
        or (outside local_api) the session token.

        Built-in commands never do; this stops an app command that returns one by mistake.
        """
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            raise IpcError(f"The command {spec.name} returned a value that is not plain JSON.",
                           reason="invalid_result", fix="return dicts, lists, strings, numbers, booleans or None") \
                from None
        forbidden = {value for value in self.vault.snapshot().values() if len(value) >= MIN_SECRET_CHARS}
        forbidden |= {token for token, _ in self._exec_tokens.values()}
        credentials = self._supervisor.credentials()
        if credentials is not None and not (spec.name == "local_api" and spec is BUILTIN_COMMANDS.get("local_api")):
            forbidden.add(credentials[1])
        for text in _strings_in(result):
            if any(value in text for value in forbidden):
                log.error("ipc result withheld: it contains a secret value command=%s", spec.name)
                raise IpcError(f"The command {spec.name} tried to return a secret value; the result was withheld.",
                               reason="secret_in_result", fix="return names or status, never a key")

    def _audit_call(self, spec: Command | None, window: str, secret: str | None, outcome: str,
                    reason: str | None) -> None:
        if spec is None or not spec.audit or self._audit is None:
            return
        self._audit.record(window=window, command=spec.name, secret=secret, outcome=outcome, reason=reason)

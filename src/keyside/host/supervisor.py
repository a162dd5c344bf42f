"""The sidecar supervisor: start `python -m keyside.sidecar`, verify its handshake, restart it on a crash.

One start, in order:
1. Spawn the child with a minimal environment and pipes on stdin, stdout and stderr.
2. Write the bootstrap (a fresh token and nonce, the secrets, the services) on its stdin.
3. Wait a bounded time for one `ready` line and verify its HMAC proof over the nonce and the
   reported port. Until the proof checks out, the port is not published and no token-bearing
   traffic goes to it (fail closed). A squatter on the port, a stale sidecar of an earlier run
   or a child that lies about its port therefore never receives the token.
4. Keep stdin open as the control channel.

A child that exits unexpectedly is restarted with exponential backoff and a fresh token. After
`max_quick_failures` failures in a row (a crash within `stable_run_s` of its start, or a start
that failed) the state becomes `failed` with the reason. Stopping closes stdin, then sends SIGTERM
and, after a grace period, SIGKILL to a child that is still running. If the host dies, the child
reads EOF on stdin and exits. On Linux the sidecar also requests SIGTERM when its parent thread
dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keyside
from keyside.errors import KeysideError
from keyside.host.channel import ControlChannel, SidecarError
from keyside.host.session import Session
from keyside.limits import validate_limit_fields
from keyside.redact import Redactor
from keyside.sidecar.protocol import (
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    decode_message,
    encode_message,
    verify_handshake,
)

log = logging.getLogger(__name__)

# A real sidecar is ready in well under a second; ten seconds covers a cold start on a slow disk.
HANDSHAKE_TIMEOUT_S = 10.0
# Control requests are local and small; a sidecar that takes longer is hung.
CONTROL_TIMEOUT_S = 5.0
# Restart delays double from the first to the cap.
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
# This many failures in a row, each within STABLE_RUN_S of its start, mean the sidecar cannot run.
MAX_QUICK_FAILURES = 5
STABLE_RUN_S = 30.0
# The sidecar exits within this time of stdin EOF; a stop waits this long before SIGTERM.
EOF_EXIT_S = 1.0
# Time between SIGTERM and SIGKILL when stopping.
STOP_GRACE_S = 2.0
# Maximum length of a stderr line forwarded to the host log; the rest of a longer line is cut.
MAX_STDERR_LINE_CHARS = 2000
# stderr lines logged as warnings when a child fails: enough for a Python traceback.
STDERR_TAIL_LINES = 40

# Environment variables passed to the child; everything else (tokens, keys, proxies) stays out.
CHILD_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")
# Windows cannot create sockets without SYSTEMROOT.
CHILD_ENV_NAMES_WINDOWS = ("SYSTEMROOT", "TEMP", "TMP", "USERPROFILE", "LOCALAPPDATA")


class SidecarState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


class InvalidSupervisorSettings(KeysideError):
    reason = "invalid_supervisor_settings"


@dataclass(frozen=True)
class SupervisorSettings:
    """Timeouts and restart limits; tests shorten them, apps normally keep the defaults."""

    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    control_timeout_s: float = CONTROL_TIMEOUT_S
    backoff_initial_s: float = BACKOFF_INITIAL_S
    backoff_max_s: float = BACKOFF_MAX_S
    max_quick_failures: int = MAX_QUICK_FAILURES
    stable_run_s: float = STABLE_RUN_S
    stop_grace_s: float = STOP_GRACE_S
    eof_exit_s: float = EOF_EXIT_S

    def __post_init__(self) -> None:
        validate_limit_fields(self, "Supervisor setting", InvalidSupervisorSettings)


def default_sidecar_command() -> list[str]:
    return [sys.executable, "-m", "keyside.sidecar"]


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Return the minimal environment for the sidecar.

    PYTHONPATH is passed only when the keyside package itself is found through it, so the child
    can import the same keyside as the host.
    """
    source = os.environ if environ is None else environ
    names = CHILD_ENV_NAMES + (CHILD_ENV_NAMES_WINDOWS if sys.platform == "win32" else ())
    env = {name: source[name] for name in names if name in source}
    package_root = str(Path(keyside.__file__).resolve().parent.parent)
    python_path = [entry for entry in source.get("PYTHONPATH", "").split(os.pathsep) if entry]
    if any(Path(entry).resolve() == Path(package_root) for entry in python_path):
        env["PYTHONPATH"] = package_root
    return env


@dataclass
class _Child:
    process: asyncio.subprocess.Process
    session: Session
    port: int | None = None
    channel: ControlChannel | None = None
    ready_at: float = 0.0
    stderr_task: asyncio.Task[None] | None = field(default=None, repr=False)
    # The last stderr lines, logged as a warning when the child fails.
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES), repr=False)

    def log_stderr_tail(self) -> None:
        for line in self.stderr_tail:
            log.warning("sidecar stderr before failure pid=%d line=%s", self.process.pid, line)


BootstrapBuilder = Callable[[], dict[str, Any]]
LaunchHook = Callable[[], Awaitable[None]]
StateListener = Callable[[dict[str, Any]], None]


class Supervisor:
    """Runs one sidecar at a time on the host's event loop.

    `build_bootstrap` returns the bootstrap fields other than type, version, token, nonce and
    preferred_port. It is called at every start, so a restarted sidecar gets the current secrets.
    `on_launched` runs after the proof is verified and before the state becomes ready; control
    requests already work then (the host re-adds exec tokens there).
    """

    def __init__(self, build_bootstrap: BootstrapBuilder, *, command: list[str] | None = None,
                 preferred_port: int = 0, settings: SupervisorSettings | None = None,
                 on_launched: LaunchHook | None = None, redactor: Redactor | None = None):
        self._build_bootstrap = build_bootstrap
        self._command = list(command) if command else default_sidecar_command()
        self._preferred_port = preferred_port
        self.settings = settings or SupervisorSettings()
        self._on_launched = on_launched
        self._redactor = redactor or Redactor()
        self._child: _Child | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._restart_requested = False
        self._failures = 0
        self._restarts = 0
        self._listeners: list[StateListener] = []
        self._state: dict[str, Any] = self._state_dict(SidecarState.STARTING, None, None)

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        """The current state: {"state", "reason", "message", "url", "restarts", "pid"}; never the token."""
        return dict(self._state)

    @property
    def url(self) -> str | None:
        return self._state["url"]

    def credentials(self) -> tuple[str, str] | None:
        """Return (base URL, UI token) of the verified, ready sidecar, or None in any other state.

        Both come from the same child, so a restart between two reads cannot pair the new
        token with the old port.
        """
        child = self._child
        if self._state["state"] != SidecarState.READY or child is None or child.port is None:
            return None
        return f"http://127.0.0.1:{child.port}", child.session.token

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.process.pid if child is not None else None

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def _state_dict(self, state: SidecarState, reason: str | None, message: str | None) -> dict[str, Any]:
        child = self._child
        ready = state == SidecarState.READY and child is not None and child.port is not None
        return {
            "state": state.value,
            "reason": reason,
            "message": message,
            "url": f"http://127.0.0.1:{child.port}" if ready and child else None,
            "restarts": self._restarts,
            "pid": child.process.pid if ready and child else None,
        }

    def _set_state(self, state: SidecarState, reason: str | None = None, message: str | None = None) -> None:
        self._state = self._state_dict(state, reason, message)
        log.info("sidecar state=%s reason=%s restarts=%d pid=%s", state.value, reason, self._restarts,
                 self._state["pid"])
        for listener in list(self._listeners):
            try:
                listener(self.state)
            except Exception:
                log.exception("sidecar state listener failed listener=%r", listener)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, timeout_s: float | None = None) -> None:
        """Start the first sidecar and return when it is ready; raise SidecarError when it fails.

        The first start is not retried: a sidecar that cannot start now would not start on a
        retry either (a missing module, a bad bootstrap), and the caller gets the reason at once.
        `timeout_s` bounds the whole start, including the `on_launched` hook.
        """
        if self._task is not None:
            raise RuntimeError("the supervisor was already started")
        self._set_state(SidecarState.STARTING)
        try:
            async with asyncio.timeout(timeout_s):
                child = await self._launch()
        except TimeoutError:
            error = SidecarError(f"The sidecar was not ready within {timeout_s:.1f} s.",
                                 reason="sidecar_start_timeout", fix="check the host log, or allow a longer timeout")
            self._set_state(SidecarState.FAILED, error.reason, error.message)
            raise error from None
        except SidecarError as error:
            self._set_state(SidecarState.FAILED, error.reason, error.message)
            raise
        self._set_state(SidecarState.READY)
        self._task = asyncio.create_task(self._supervise(child), name="sidecar-supervisor")

    async def stop(self) -> None:
        """Stop the sidecar and the restart loop; safe to call more than once."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        child, self._child = self._child, None
        if child is not None:
            await self._terminate(child)
        # A failed state keeps its reason, so a caller can still tell why the sidecar never ran.
        if self._state["state"] != SidecarState.FAILED:
            self._set_state(SidecarState.STOPPED)

    async def restart(self, reason: str) -> None:
        """Replace a running sidecar with a fresh one (new token) without counting a failure."""
        child = self._child
        if child is None or self._stopping:
            return
        log.info("restarting the sidecar on request reason=%s pid=%d", reason, child.process.pid)
        self._restart_requested = True
        await self._terminate(child)

    async def request(self, message_type: str, *, timeout_s: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send a control request to the current sidecar; raise SidecarError when there is none."""
        child = self._child
        if child is None or child.channel is None:
            raise SidecarError(f"The sidecar is not running (state {self._state['state']}).",
                               fix="wait until it is ready, or check the host log")
        return await child.channel.request(message_type, timeout_s or self.settings.control_timeout_s, **fields)

    # -- one start -----------------------------------------------------------------------------

    async def _launch(self) -> _Child:
        session = Session()
        self._redactor.add(session.token)
        bootstrap = {
            "type": "bootstrap",
            "version": PROTOCOL_VERSION,
            "token": session.token,
            "nonce": session.nonce,
            "preferred_port": self._preferred_port,
            **self._build_bootstrap(),
        }
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_environment(),
                limit=MAX_LINE_BYTES + 1,
                # Its own process group: Ctrl-C in a terminal reaches the host, which stops the
                # sidecar in order, instead of killing both at once.
                start_new_session=sys.platform != "win32",
            )
        except OSError as error:
            raise SidecarError(f"Could not start the sidecar {self._command[0]!r}: {error.strerror}.",
                               reason="sidecar_spawn_failed",
                               fix="check that Python and the keyside package are installed") from None

        child = _Child(process, session)
        child.stderr_task = asyncio.create_task(self._forward_stderr(process, child.stderr_tail),
                                                name=f"sidecar-{process.pid}-stderr")
        log.info("sidecar spawned pid=%d preferred_port=%d", process.pid, self._preferred_port)
        try:
            await self._write_bootstrap(process, bootstrap)
            del bootstrap
            child.port = await self._read_handshake(child)
            child.channel = ControlChannel(process.stdin, process.stdout, process.pid)  # type: ignore[arg-type]
            child.channel.start()
            child.ready_at = time.monotonic()
            self._child = child
            if self._on_launched is not None:
                await self._on_launched()
        except BaseException as error:
            # Also on cancellation (a start timeout or stop): no child outlives a failed start.
            if self._child is child:
                self._child = None
            await self._terminate(child)
            if isinstance(error, SidecarError):
                child.log_stderr_tail()
            raise
        log.info("sidecar ready pid=%d port=%d", process.pid, child.port)
        return child

    async def _write_bootstrap(self, process: asyncio.subprocess.Process, bootstrap: dict[str, Any]) -> None:
        assert process.stdin is not None
        try:
            process.stdin.write(encode_message(bootstrap))
            await process.stdin.drain()
        except (ConnectionError, BrokenPipeError):
            code = await self._exit_code(process)
            raise SidecarError(f"The sidecar exited before it read its bootstrap (exit code {code}).",
                               reason="sidecar_exited", fix="check the host log for the sidecar's error") from None

    async def _read_handshake(self, child: _Child) -> int:
        process = child.process
        assert process.stdout is not None
        timeout_s = self.settings.handshake_timeout_s
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
        except TimeoutError:
            raise SidecarError(f"The sidecar did not report ready within {timeout_s:.1f} s.",
                               reason="handshake_timeout", fix="check the host log for the sidecar's output") from None
        except ValueError:
            raise SidecarError("The sidecar's first line is longer than the protocol allows.",
                               reason="handshake_invalid", fix="run a matching keyside sidecar") from None
        if not line:
            code = await self._exit_code(process)
            raise SidecarError(f"The sidecar exited before it reported ready (exit code {code}).",
                               reason="sidecar_exited", fix="check the host log for the sidecar's error")
        try:
            message = decode_message(line)
        except ValueError:
            raise SidecarError("The sidecar's first line is not a protocol message.",
                               reason="handshake_invalid", fix="run a matching keyside sidecar") from None

        if message["type"] == "fatal":
            reason = message.get("reason")
            text = message.get("message")
            raise SidecarError(f"The sidecar could not start: {text if isinstance(text, str) else 'no message'}",
                               reason=reason if isinstance(reason, str) and reason else "sidecar_fatal",
                               fix="check the host log for the sidecar's error")
        port = message.get("port")
        if message["type"] != "ready" or not isinstance(port, int) or isinstance(port, bool) \
                or not 0 < port < 65536:
            raise SidecarError("The sidecar's ready line has no valid type and port.",
                               reason="handshake_invalid", fix="run a matching keyside sidecar")
        if not verify_handshake(child.session.token, child.session.nonce, port, message.get("proof")):
            log.warning("sidecar handshake proof invalid pid=%d port=%d", process.pid, port)
            raise SidecarError(f"The listener on reported port {port} failed the token proof check.",
                               reason="handshake_proof_invalid",
                               fix="another program may be answering for the sidecar; check the host log")
        return port

    async def _exit_code(self, process: asyncio.subprocess.Process) -> int | None:
        try:
            return await asyncio.wait_for(process.wait(), self.settings.stop_grace_s)
        except TimeoutError:
            return None

    async def _forward_stderr(self, process: asyncio.subprocess.Process, tail: deque[str]) -> None:
        assert process.stderr is not None
        while True:
            try:
                line = await process.stderr.readline()
            except ValueError:
                # A line longer than the reader's limit; skip what was buffered and carry on.
                log.info("sidecar stderr pid=%d line=(too long, skipped)", process.pid)
                continue
            if not line:
                return
            text = self._redactor.redact(line.decode("utf-8", "replace").rstrip()[:MAX_STDERR_LINE_CHARS])
            tail.append(text)
            log.info("sidecar stderr pid=%d line=%s", process.pid, text)

    async def _terminate(self, child: _Child) -> None:
        process = child.process
        if child.channel is not None:
            await child.channel.close()
        elif process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        if process.returncode is None:
            # stdin EOF requests a clean exit (logs flushed); SIGTERM and SIGKILL follow if it hangs.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), self.settings.eof_exit_s)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), self.settings.stop_grace_s)
            except TimeoutError:
                log.warning("sidecar ignored SIGTERM, killing it pid=%d grace_s=%.1f",
                            process.pid, self.settings.stop_grace_s)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if child.stderr_task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(child.stderr_task, self.settings.stop_grace_s)
        self._redactor.discard(child.session.token)
        log.info("sidecar stopped pid=%d returncode=%s", process.pid, process.returncode)

    # -- watching and restarting ---------------------------------------------------------------

    def _count_failure(self, reason: str, message: str) -> bool:
        """Count one failure; return True when the limit is reached and the state is now failed."""
        self._failures += 1
        if self._failures >= self.settings.max_quick_failures:
            self._set_state(SidecarState.FAILED, "restart_limit_reached",
                            f"The sidecar failed {self._failures} times in a row; last failure: {reason}: {message}")
            return True
        return False

    def _backoff_s(self) -> float:
        exponent = max(self._failures - 1, 0)
        return min(self.settings.backoff_initial_s * (2 ** exponent), self.settings.backoff_max_s)

    async def _supervise(self, child: _Child) -> None:
        while True:
            code = await child.process.wait()
            if self._stopping:
                return
            uptime_s = time.monotonic() - child.ready_at
            if self._child is child:
                self._child = None
            await self._terminate(child)

            if self._restart_requested:
                self._restart_requested = False
                reason, message = "restart_requested", "The sidecar is being restarted with a new token."
                delay_s = 0.0
            else:
                log.warning("sidecar exited unexpectedly pid=%d returncode=%s uptime_s=%.1f",
                            child.process.pid, code, uptime_s)
                child.log_stderr_tail()
                if uptime_s >= self.settings.stable_run_s:
                    self._failures = 0
                reason, message = "sidecar_exited", f"The sidecar exited with code {code}."
                if self._count_failure(reason, message):
                    return
                delay_s = self._backoff_s()

            launched = await self._relaunch(reason, message, delay_s)
            if launched is None:
                return
            child = launched

    async def _relaunch(self, reason: str, message: str, delay_s: float) -> _Child | None:
        """Start sidecars until one is ready (returned) or the failure limit is reached (None)."""
        while True:
            self._set_state(SidecarState.RESTARTING, reason, message)
            log.info("restarting the sidecar delay_s=%.2f failures=%d", delay_s, self._failures)
            await asyncio.sleep(delay_s)
            self._restarts += 1
            try:
                child = await self._launch()
            except SidecarError as error:
                log.warning("sidecar restart failed reason=%s failures=%d", error.reason, self._failures + 1)
                reason, message = error.reason, error.message
                if self._count_failure(reason, message):
                    return None
                delay_s = self._backoff_s()
                continue
            self._set_state(SidecarState.READY)
            return child

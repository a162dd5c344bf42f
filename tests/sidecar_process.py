"""Run a real sidecar process the way the host does, for tests.

    with SidecarProcess(services=[service("echo", upstream.origin, secret="API_KEY",
                                          inject=bearer())],
                        secrets={"API_KEY": "sk-..."}) as sidecar:
        sidecar.url("/api/svc/echo/echo/x"), sidecar.auth_headers(), sidecar.control({...})

`start()` spawns `python -m keyside.sidecar` with a minimal environment, writes the bootstrap on
stdin, reads the ready line and verifies the HMAC proof for the reported port, exactly as the
host must before it sends the token anywhere. Every stdout line is kept in `messages` and all of
stderr in `stderr_text()`, so tests can assert that no secret or token was ever written there.
Import the `sidecar_factory` fixture into a test module to get processes stopped after the test.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from secrets import token_hex
from typing import Any

import pytest

from keyside.manifest import InjectSpec, ServiceSpec, ValidateSpec
from keyside.sidecar.protocol import PROTOCOL_VERSION, encode_message, verify_handshake

SIDECAR_COMMAND = [sys.executable, "-m", "keyside.sidecar"]
# Environment variables the child may inherit; nothing in them is secret.
PASSED_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "PYTHONPATH", "TMPDIR")
START_TIMEOUT_S = 10.0
CONTROL_TIMEOUT_S = 10.0


def bearer() -> InjectSpec:
    return InjectSpec("bearer")


def header(name: str) -> InjectSpec:
    return InjectSpec("header", name=name)


def query(name: str) -> InjectSpec:
    return InjectSpec("query", name=name)


def basic(username: str | None = None) -> InjectSpec:
    return InjectSpec("basic", username=username)


def path_template(template: str) -> InjectSpec:
    return InjectSpec("path", template=template)


def service(name: str, upstream: str, *, secret: str | None = None, inject: InjectSpec | None = None,
            methods: Iterable[str] = ("GET",), paths: Iterable[str] = ("/",),
            allow_private_network: bool = True, validate: ValidateSpec | None = None,
            client_key_header: str | None = None) -> dict[str, Any]:
    """Return a service entry for the bootstrap; loopback upstreams need allow_private_network."""
    spec = ServiceSpec(name, upstream, secret, inject, tuple(methods), tuple(paths), allow_private_network,
                       validate, client_key_header)
    return spec.to_dict()


def raw_http(port: int, request: bytes, timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send exact request bytes to 127.0.0.1:`port`; return (status, headers, body) of the reply.

    For requests an HTTP client will not send: missing or doubled Host, bare CR, NUL, raw paths.
    Headers are lower-cased; a status of 0 means the server closed without an HTTP reply.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        connection.sendall(request)
        received = bytearray()
        while True:
            try:
                chunk = connection.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received.extend(chunk)
            head_end = received.find(b"\r\n\r\n")
            if head_end != -1:
                length = re.search(rb"(?im)^content-length:\s*(\d+)", bytes(received[:head_end]))
                if length and len(received) >= head_end + 4 + int(length.group(1)):
                    break
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0]) if lines else None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return (int(match.group(1)) if match else 0), headers, body


class SidecarStartError(RuntimeError):
    """The sidecar did not become ready, or its ready line did not prove the token."""


class SidecarProcess:
    """One sidecar child process with its bootstrap, stdout reader and control requests."""

    def __init__(self, *, services: Iterable[dict[str, Any]] = (), secrets: dict[str, str] | None = None,
                 origins: Iterable[str] = (), allow_private: Iterable[str] = (), nameservers: Iterable[str] = (),
                 log_dir: Path | None = None, log_level: str = "INFO", preferred_port: int = 0,
                 limits: dict[str, float] | None = None, token: str | None = None,
                 command: list[str] | None = None, extra_env: dict[str, str] | None = None):
        self.token = token or token_hex(32)
        self.nonce = token_hex(32)
        self.bootstrap: dict[str, Any] = {
            "type": "bootstrap", "version": PROTOCOL_VERSION, "token": self.token, "nonce": self.nonce,
            "secrets": dict(secrets or {}), "services": list(services), "origins": list(origins),
            "preferred_port": preferred_port, "allow_private": list(allow_private),
            "nameservers": list(nameservers), "log_dir": str(log_dir) if log_dir else None,
            "log_level": log_level,
        }
        if limits:
            self.bootstrap["limits"] = limits
        self.command = command or SIDECAR_COMMAND
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] | None = None
        self.port = 0
        self.messages: list[dict[str, Any]] = []
        self.raw_stdout = bytearray()
        self._stderr = bytearray()
        self._condition = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_id = 1
        self._stdout_closed = False

    # ---- lifecycle --------------------------------------------------------------------------

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process and its reader threads without writing anything."""
        env = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
        env.update(self.extra_env)
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        return self.process

    def start(self, timeout_s: float = START_TIMEOUT_S) -> SidecarProcess:
        """Spawn, write the bootstrap, wait for the ready line and verify its proof."""
        self.spawn()
        self.send_raw(encode_message(self.bootstrap))
        first = self.wait_for_first_message(timeout_s)
        if first is None:
            raise SidecarStartError(f"no ready line within {timeout_s} s; stderr: {self.stderr_text()[-2000:]}")
        if first.get("type") != "ready":
            raise SidecarStartError(f"sidecar did not start: {first}; stderr: {self.stderr_text()[-2000:]}")
        port = first.get("port")
        if not isinstance(port, int) or not verify_handshake(self.token, self.nonce, port, first.get("proof")):
            raise SidecarStartError(f"ready line does not prove the token: {first}")
        self.ready = first
        self.port = port
        return self

    def wait_for_first_message(self, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while not self.messages and not self._stdout_closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._condition.wait(remaining)
            return self.messages[0] if self.messages else None

    def close_stdin(self) -> None:
        if self.process and self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def wait(self, timeout_s: float) -> int | None:
        """Return the exit code, or None when the process is still running after `timeout_s`."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """Close stdin as a host would, then kill the process if it has not exited in time."""
        if self.process is None:
            return None
        self.close_stdin()
        code = self.wait(timeout_s)
        if code is None:
            self.process.kill()
            code = self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()
        return code

    def __enter__(self) -> SidecarProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- HTTP helpers -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def auth_headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    # ---- control channel --------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def control(self, message: dict[str, Any], timeout_s: float = CONTROL_TIMEOUT_S) -> dict[str, Any]:
        """Send a control request (an `id` is added when missing) and return its reply."""
        with self._condition:
            request_id = message.get("id", self._next_id)
            self._next_id = max(self._next_id, request_id if isinstance(request_id, int) else 0) + 1
        self.send_raw(encode_message({**message, "id": request_id}))
        return self.wait_reply(request_id, timeout_s)

    def wait_reply(self, request_id: int | None, timeout_s: float = CONTROL_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        key = -1 if request_id is None else request_id
        with self._condition:
            while key not in self._replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stdout_closed:
                    raise TimeoutError(f"no reply to control request {request_id} within {timeout_s} s")
                self._condition.wait(remaining)
            return self._replies.pop(key)

    async def control_async(self, message: dict[str, Any], timeout_s: float = CONTROL_TIMEOUT_S) -> dict[str, Any]:
        import asyncio

        return await asyncio.to_thread(self.control, message, timeout_s)

    # ---- output capture ---------------------------------------------------------------------

    def stderr_text(self) -> str:
        with self._condition:
            return self._stderr.decode("utf-8", "replace")

    def stdout_text(self) -> str:
        with self._condition:
            return self.raw_stdout.decode("utf-8", "replace")

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in iter(self.process.stdout.readline, b""):
            try:
                message = json.loads(line)
            except ValueError:
                message = {"type": "unparsable", "line": line.decode("utf-8", "replace")}
            with self._condition:
                self.raw_stdout.extend(line)
                self.messages.append(message)
                if message.get("type") == "reply":
                    request_id = message.get("id")
                    self._replies[-1 if request_id is None else request_id] = message
                self._condition.notify_all()
        with self._condition:
            self._stdout_closed = True
            self._condition.notify_all()

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for chunk in iter(lambda: self.process.stderr.read1(65536), b""):  # type: ignore[union-attr]
            with self._condition:
                self._stderr.extend(chunk)


@pytest.fixture
def sidecar_factory() -> Iterator[Any]:
    """Return a function that starts SidecarProcess(**kwargs); every process is stopped afterwards."""
    started: list[SidecarProcess] = []

    def start(**kwargs: Any) -> SidecarProcess:
        process = SidecarProcess(**kwargs)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()

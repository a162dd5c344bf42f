"""The sidecar as a process: bootstrap, handshake, control channel, lifetime and what it exposes.

The 1-second exit bound after stdin closes is enforced inside the sidecar by a watchdog
(EXIT_DEADLINE_S). The tests here wait up to a few seconds, so a loaded machine does not fail them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from secrets import token_hex
from typing import Any

import aiohttp
import pytest

from keyside.manifest import ValidateSpec
from keyside.sidecar.protocol import MAX_LINE_BYTES, encode_message, handshake_proof, verify_handshake
from sidecar_process import SIDECAR_COMMAND, SidecarProcess, bearer, service
from upstreams import BackgroundUpstreams, UpstreamServer

KEY = "sk-process-test-Q2hlY2tNZQ"
CANDIDATE = "sk-candidate-not-stored-77"
# Generous bounds for a loaded CI machine; the sidecar itself exits within EXIT_DEADLINE_S.
EXIT_WAIT_S = 5.0
# These tests read /proc or the parent-death signal, which only Linux has.
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc and prctl")


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with BackgroundUpstreams(UpstreamServer(KEY)) as (server,):
        yield server


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def services_for(upstream: UpstreamServer) -> list[dict[str, Any]]:
    return [
        service("openai", upstream.origin, secret="OPENAI_API_KEY", inject=bearer(), paths=["/v1/", "/bearer/"],
                validate=ValidateSpec("/v1/models")),
        service("flaky", upstream.origin, secret="OPENAI_API_KEY", inject=bearer(), paths=["/status/"],
                validate=ValidateSpec("/status/503")),
        service("gone", f"http://127.0.0.1:{closed_port()}", secret="OPENAI_API_KEY", inject=bearer(),
                paths=["/v1/"], validate=ValidateSpec("/v1/models")),
        service("novalidation", upstream.origin, secret="OPENAI_API_KEY", inject=bearer(), paths=["/v1/"]),
        service("keyless", upstream.origin, paths=["/echo/"]),
    ]


@pytest.fixture(scope="module")
def sidecar(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    with SidecarProcess(services=services_for(upstream), secrets={"OPENAI_API_KEY": KEY},
                        log_dir=tmp_path_factory.mktemp("process-logs"),
                        limits={"connect_timeout_s": 2.0, "read_timeout_s": 2.0}) as process:
        yield process


def http_status(sidecar: SidecarProcess, path: str, token: str | None = None) -> int:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{sidecar.port}\r\n"
               f"Authorization: Bearer {token or sidecar.token}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as connection:
        connection.sendall(request)
        head = connection.recv(64)
    return int(head.split()[1])


def process_gone(pid: int) -> bool:
    """Return True when `pid` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.02)
    return process_gone(pid)


# ---- handshake ---------------------------------------------------------------------------------


def test_ready_line_proves_token(sidecar: SidecarProcess) -> None:
    ready = sidecar.ready
    assert ready is not None
    assert set(ready) == {"type", "port", "pid", "proof"}
    assert ready["pid"] == sidecar.process.pid
    assert verify_handshake(sidecar.token, sidecar.nonce, ready["port"], ready["proof"])
    assert not verify_handshake(token_hex(32), sidecar.nonce, ready["port"], ready["proof"])
    assert not verify_handshake(sidecar.token, token_hex(32), ready["port"], ready["proof"])
    assert not verify_handshake(sidecar.token, sidecar.nonce, ready["port"] + 1, ready["proof"])
    assert ready["proof"] == handshake_proof(sidecar.token, sidecar.nonce, ready["port"])


@linux_only
def test_listens_on_ipv4_loopback_only(sidecar: SidecarProcess) -> None:
    connections = Path("/proc/net/tcp").read_text().splitlines()[1:]
    listening = [line.split()[1] for line in connections if line.split()[3] == "0A"]
    own = [address for address in listening if int(address.split(":")[1], 16) == sidecar.port]
    assert own == ["0100007F:" + f"{sidecar.port:04X}"]


@linux_only
def test_no_secret_in_argv_or_environment(sidecar: SidecarProcess) -> None:
    pid = sidecar.process.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    for value in (sidecar.token, KEY):
        assert value.encode() not in cmdline
        assert value.encode() not in environ
    assert cmdline.split(b"\0")[1:3] == [b"-m", b"keyside.sidecar"]


def test_preferred_port_used_when_free() -> None:
    port = closed_port()
    with SidecarProcess(preferred_port=port) as sidecar:
        assert sidecar.port == port


def test_preferred_port_squatted_falls_back() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        squatted = squatter.getsockname()[1]
        with SidecarProcess(preferred_port=squatted) as sidecar:
            assert sidecar.port != squatted
            assert http_status(sidecar, "/api/health") == 200
        squatter.setblocking(False)
        with pytest.raises(BlockingIOError):
            squatter.accept()


# ---- bad bootstraps ----------------------------------------------------------------------------

BAD_BOOTSTRAP_LINES = [
    ("not_json", b"hello\n", "invalid_bootstrap"),
    ("json_array", b"[1, 2]\n", "invalid_bootstrap"),
    ("control_first", encode_message({"type": "ping", "id": 1}), "invalid_bootstrap"),
    ("short_token", encode_message({"type": "bootstrap", "version": 1, "token": "abc", "nonce": "a" * 64}),
     "invalid_bootstrap"),
    ("secret_with_crlf", encode_message({"type": "bootstrap", "version": 1, "token": "t" * 64, "nonce": "a" * 64,
                                         "secrets": {"API_KEY": "sk-leak\r\nX: 1"}}), "invalid_secret_value"),
]


@pytest.mark.parametrize(("line", "reason"), [case[1:] for case in BAD_BOOTSTRAP_LINES],
                         ids=[case[0] for case in BAD_BOOTSTRAP_LINES])
def test_bad_bootstrap_is_fatal(line: bytes, reason: str) -> None:
    sidecar = SidecarProcess()
    sidecar.spawn()
    sidecar.send_raw(line)
    first = sidecar.wait_for_first_message(10.0)
    code = sidecar.stop()
    assert first is not None
    assert first["type"] == "fatal"
    assert first["reason"] == reason
    assert code == 2
    assert b"sk-leak" not in bytes(sidecar.raw_stdout)
    assert "sk-leak" not in sidecar.stderr_text()
    assert "t" * 64 not in sidecar.stderr_text()


def test_stdin_closed_before_bootstrap() -> None:
    sidecar = SidecarProcess()
    sidecar.spawn()
    sidecar.close_stdin()
    assert sidecar.wait(EXIT_WAIT_S) == 2
    assert sidecar.messages == []


# ---- lifetime ----------------------------------------------------------------------------------


def test_exits_when_stdin_closes() -> None:
    sidecar = SidecarProcess().start()
    port = sidecar.port
    sidecar.close_stdin()
    assert sidecar.wait(EXIT_WAIT_S) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    sidecar.stop()


async def test_exits_during_open_stream(upstream: UpstreamServer) -> None:
    services = [service("openai", upstream.origin, secret="OPENAI_API_KEY", inject=bearer(), paths=["/sse"])]
    sidecar = SidecarProcess(services=services, secrets={"OPENAI_API_KEY": KEY}).start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(sidecar.url("/api/svc/openai/sse?events=1000&interval_ms=50"),
                                   headers=sidecar.auth_headers()) as response:
                await response.content.readuntil(b"\n\n")
                sidecar.close_stdin()
                assert sidecar.wait(EXIT_WAIT_S) == 0
                with pytest.raises(aiohttp.ClientError):
                    await response.read()
    finally:
        sidecar.stop()


PARENT_SCRIPT = textwrap.dedent("""
    import subprocess, sys, time
    stdin_fd = int(sys.argv[1])
    child = subprocess.Popen(sys.argv[2:], stdin=stdin_fd, pass_fds=(stdin_fd,))
    print(child.pid, flush=True)
    time.sleep(600)
""")


@linux_only
def test_parent_death_signal_stops_sidecar() -> None:
    # The test keeps the write end of the sidecar's stdin open, so only the parent-death signal
    # (Linux prctl) can tell the sidecar that its parent was killed.
    read_fd, write_fd = os.pipe()
    sidecar = SidecarProcess()
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, str(read_fd), *SIDECAR_COMMAND],
                              pass_fds=(read_fd,), stdout=subprocess.PIPE)
    os.close(read_fd)
    try:
        child_pid = int(parent.stdout.readline())
        os.write(write_fd, encode_message(sidecar.bootstrap))
        # The child shares the parent's stdout; its ready line shows it is serving.
        assert json.loads(parent.stdout.readline())["type"] == "ready"
        parent.kill()
        parent.wait(timeout=5)
        assert wait_gone(child_pid, EXIT_WAIT_S)
    finally:
        os.close(write_fd)
        parent.kill()
        parent.stdout.close()


@linux_only
def test_parent_killed_closes_stdin() -> None:
    # Here the killed parent had the only write end, so the sidecar reads end of file.
    sidecar = SidecarProcess()
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen({SIDECAR_COMMAND!r}, stdin=subprocess.PIPE)
        child.stdin.write(sys.stdin.buffer.readline())
        child.stdin.flush()
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        parent.stdin.write(encode_message(sidecar.bootstrap))
        parent.stdin.flush()
        child_pid = int(parent.stdout.readline())
        ready = json.loads(parent.stdout.readline())
        assert ready["type"] == "ready"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=5)
        assert wait_gone(child_pid, EXIT_WAIT_S)
    finally:
        parent.kill()
        parent.stdin.close()
        parent.stdout.close()


# ---- control channel ---------------------------------------------------------------------------


def test_ping(sidecar: SidecarProcess) -> None:
    reply = sidecar.control({"type": "ping"})
    assert reply["ok"] is True
    assert reply["uptime_s"] >= 0


def test_set_and_delete_secret(sidecar: SidecarProcess) -> None:
    assert http_status(sidecar, "/api/svc/openai/bearer/x") == 200
    reply = sidecar.control({"type": "delete_secret", "name": "OPENAI_API_KEY"})
    assert reply == {"type": "reply", "id": reply["id"], "ok": True, "name": "OPENAI_API_KEY", "deleted": True}
    assert http_status(sidecar, "/api/svc/openai/bearer/x") == 424
    reply = sidecar.control({"type": "set_secret", "name": "OPENAI_API_KEY", "value": KEY})
    assert reply == {"type": "reply", "id": reply["id"], "ok": True, "name": "OPENAI_API_KEY"}
    assert http_status(sidecar, "/api/svc/openai/bearer/x") == 200


def test_new_secret_value_used_and_scrubbed(sidecar: SidecarProcess, upstream: UpstreamServer) -> None:
    new_value = "sk-rotated-value-000111222"
    assert sidecar.control({"type": "set_secret", "name": "OPENAI_API_KEY", "value": new_value})["ok"] is True
    try:
        upstream.clear()
        assert http_status(sidecar, "/api/svc/openai/bearer/x") == 401  # the upstream accepts only KEY
        (received,) = upstream.requests
        assert received.header("Authorization") == f"Bearer {new_value}"
    finally:
        assert sidecar.control({"type": "set_secret", "name": "OPENAI_API_KEY", "value": KEY})["ok"] is True


BAD_CONTROL = [
    ("secret_crlf", {"type": "set_secret", "name": "OPENAI_API_KEY", "value": "sk-bad\r\nX: y"},
     "invalid_secret_value"),
    ("secret_empty", {"type": "set_secret", "name": "OPENAI_API_KEY", "value": ""}, "invalid_secret_value"),
    ("secret_name", {"type": "set_secret", "name": "openai key", "value": "sk-x-1234"}, "invalid_secret_name"),
    ("delete_name", {"type": "delete_secret", "name": "../x"}, "invalid_secret_name"),
    ("rotate_short", {"type": "rotate_token", "token": "abc"}, "invalid_token"),
    ("unknown_type", {"type": "shutdown"}, "unknown_message"),
    ("second_bootstrap", {"type": "bootstrap"}, "already_bootstrapped"),
    ("origins_not_list", {"type": "set_origins", "origins": "http://x"}, "invalid_message"),
    ("origin_null", {"type": "set_origins", "origins": ["null"]}, "invalid_bootstrap"),
]


@pytest.mark.parametrize(("message", "reason"), [case[1:] for case in BAD_CONTROL],
                         ids=[case[0] for case in BAD_CONTROL])
def test_bad_control_request(message: dict[str, Any], reason: str, sidecar: SidecarProcess) -> None:
    reply = sidecar.control(message)
    assert reply["ok"] is False
    assert reply["reason"] == reason
    assert "sk-bad" not in json.dumps(reply)
    assert http_status(sidecar, "/api/svc/openai/bearer/x") == 200


@pytest.mark.parametrize("line", [b"not json\n", b"{\"type\": \"ping\"}\n", b"{\"type\": \"ping\", \"id\": true}\n",
                                  b"[]\n"], ids=["not_json", "no_id", "boolean_id", "array"])
def test_malformed_control_line(line: bytes, sidecar: SidecarProcess) -> None:
    sidecar.send_raw(line)
    reply = sidecar.wait_reply(None)
    assert reply["ok"] is False
    assert reply["reason"] == "invalid_message"
    assert sidecar.control({"type": "ping"})["ok"] is True


def test_overlong_control_line(sidecar: SidecarProcess) -> None:
    sidecar.send_raw(b'{"type": "set_secret", "value": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n')
    reply = sidecar.wait_reply(None)
    assert reply["reason"] == "invalid_message"
    assert sidecar.control({"type": "ping"})["ok"] is True


VALIDATIONS = [
    ("valid", "openai", KEY, {"ok": True, "result": "valid", "reason": "status_expected", "status": 200}),
    ("rejected", "openai", CANDIDATE, {"ok": True, "result": "invalid", "reason": "key_rejected", "status": 401}),
    ("server_error", "flaky", KEY, {"ok": True, "result": "unreachable", "reason": "upstream_status",
                                    "status": 503}),
    ("connection_refused", "gone", KEY, {"ok": True, "result": "unreachable", "reason": "connect_failed",
                                         "status": None}),
    ("no_validation", "novalidation", KEY, {"ok": False, "reason": "validation_not_declared"}),
    ("keyless", "keyless", KEY, {"ok": False, "reason": "service_has_no_key"}),
    ("unknown_service", "nosuch", KEY, {"ok": False, "reason": "unknown_service"}),
    ("malformed_value", "openai", "sk-x\nY", {"ok": False, "reason": "invalid_secret_value"}),
]


@pytest.mark.parametrize(("service_name", "value", "expected"), [case[1:] for case in VALIDATIONS],
                         ids=[case[0] for case in VALIDATIONS])
def test_validate(service_name: str, value: str, expected: dict[str, Any], sidecar: SidecarProcess,
                  upstream: UpstreamServer) -> None:
    reply = sidecar.control({"type": "validate", "service": service_name, "value": value})
    for field, wanted in expected.items():
        assert reply[field] == wanted, field
    assert value not in json.dumps(reply)


def test_validation_does_not_store_candidate(sidecar: SidecarProcess, upstream: UpstreamServer) -> None:
    sidecar.control({"type": "validate", "service": "openai", "value": CANDIDATE})
    upstream.clear()
    assert http_status(sidecar, "/api/svc/openai/bearer/x") == 200
    (received,) = upstream.requests
    assert received.header("Authorization") == f"Bearer {KEY}"


def test_validations_run_concurrently(sidecar: SidecarProcess) -> None:
    # A validation is a task: a ping sent after it is answered, even while the probe is out.
    first_id, ping_id = 9001, 9002
    sidecar.send_raw(encode_message({"type": "validate", "id": first_id, "service": "openai", "value": KEY}))
    sidecar.send_raw(encode_message({"type": "ping", "id": ping_id}))
    assert sidecar.wait_reply(ping_id)["ok"] is True
    assert sidecar.wait_reply(first_id)["result"] == "valid"


def test_set_origins_changes_cors(sidecar: SidecarProcess) -> None:
    origin = "http://127.0.0.1:6111"

    def status_from(page_origin: str) -> int:
        request = (f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{sidecar.port}\r\nOrigin: {page_origin}\r\n"
                   "Connection: close\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as connection:
            connection.sendall(request)
            return int(connection.recv(64).split()[1])

    assert status_from(origin) == 403
    reply = sidecar.control({"type": "set_origins", "origins": [origin]})
    assert reply["origins"] == [origin]
    try:
        assert status_from(origin) == 200
    finally:
        sidecar.control({"type": "set_origins", "origins": []})
    assert status_from(origin) == 403


@linux_only
def test_log_file_private(sidecar: SidecarProcess) -> None:
    log_dir = Path(sidecar.bootstrap["log_dir"])
    assert (log_dir / "sidecar.log").stat().st_mode & 0o777 == 0o600
    assert log_dir.stat().st_mode & 0o777 == 0o700


def test_outputs_hold_no_secrets(sidecar: SidecarProcess) -> None:
    # Exercise replies, stderr and the log with every kind of value first, then read them all.
    assert sidecar.control({"type": "set_secret", "name": "OPENAI_API_KEY", "value": KEY})["ok"] is True
    sidecar.control({"type": "validate", "service": "openai", "value": CANDIDATE})
    sidecar.control({"type": "set_secret", "name": "OPENAI_API_KEY", "value": "sk-bad\r\nX: y"})
    assert http_status(sidecar, f"/api/svc/openai/bearer/{sidecar.token}") == 400
    assert http_status(sidecar, "/api/status", token=token_hex(32)) == 401

    log_text = "\n".join(path.read_text() for path in Path(sidecar.bootstrap["log_dir"]).glob("sidecar.log*"))
    assert "secret set name=OPENAI_API_KEY" in log_text
    assert "key validation service=openai" in log_text
    for output in (sidecar.stdout_text(), sidecar.stderr_text(), log_text):
        assert sidecar.token not in output
        assert KEY not in output
        assert CANDIDATE not in output
        assert "sk-bad" not in output
        assert "sk-rotated-value-000111222" not in output

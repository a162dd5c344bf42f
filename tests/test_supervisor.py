"""Supervisor behaviour that a real sidecar never shows: silence, slowness, lies, crashes, hangs.

Each case starts the fake sidecar in tests/data/ipc_fake_sidecar.py through `sidecar_command`
and checks the state, the reason, and that no token reached a listener that did not prove itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import socket
import threading

import pytest

from keyside.host import Host, IpcError, SidecarError
from keyside.host.supervisor import CHILD_ENV_NAMES, Supervisor, child_environment
from keyside.vault import MemoryStore, Vault, VaultError
from test_host_support import (
    ECHO_KEY,
    FAST,
    PAGE_ORIGIN,
    FailingStore,
    fake_sidecar,
    http_get,
    memory_vault,
    process_gone,
    read_records,
    running_host,
    starts,
    wait_until,
    write_app,
)

SETTINGS_URL = f"{PAGE_ORIGIN}/settings.html"
# A session token: 256 bits as 64 hex digits.
TOKEN_PATTERN = re.compile(r"\b[0-9a-f]{64}\b")


@pytest.fixture
def manifest(tmp_path):
    return write_app(tmp_path / "app")


@pytest.fixture
def record(tmp_path):
    return tmp_path / "sidecar.jsonl"


class Squatter:
    """A TCP listener on loopback that counts connections and bytes it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            try:
                self.received += conn.recv(65536)
            except TimeoutError:
                pass
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def squatter():
    listener = Squatter()
    yield listener
    listener.close()


def _start_failure(manifest, tmp_path, command, settings=FAST) -> tuple[Host, SidecarError]:
    host = Host(manifest, memory_vault(manifest, {"ECHO_KEY": ECHO_KEY}), log_dir=tmp_path / "logs",
                sidecar_command=command, settings=settings)
    host.add_page_origin(PAGE_ORIGIN)
    with pytest.raises(SidecarError) as caught:
        host.start(timeout_s=15.0)
    return host, caught.value


START_FAILURES = [
    pytest.param("silent", {}, "handshake_timeout", id="silent-sidecar"),
    pytest.param("slow", {"delay_s": 3.0}, "handshake_timeout", id="slow-sidecar-past-timeout"),
    pytest.param("wrong_proof", {}, "handshake_proof_invalid", id="wrong-proof"),
    pytest.param("fatal", {}, "port_unavailable", id="fatal-line"),
    pytest.param("exit", {}, "sidecar_exited", id="exits-after-bootstrap"),
    pytest.param("garbage", {}, "handshake_invalid", id="garbage-line"),
]


@pytest.mark.parametrize(("mode", "options", "reason"), START_FAILURES)
def test_start_failure_reason(manifest, tmp_path, record, mode, options, reason):
    settings = dataclasses.replace(FAST, handshake_timeout_s=1.0)
    host, error = _start_failure(manifest, tmp_path, fake_sidecar(mode, record=record, **options), settings)

    assert error.reason == reason
    state = host.sidecar_state
    assert state["state"] == "failed"
    assert state["reason"] == reason
    assert state["url"] is None
    assert host.sidecar_credentials() is None
    for entry in starts(record):
        assert process_gone(entry["pid"])


def test_stderr_lines_are_redacted(manifest, tmp_path, record, caplog):
    caplog.set_level(logging.INFO, logger="keyside")
    host, error = _start_failure(manifest, tmp_path, fake_sidecar("leak_stderr", record=record))
    assert error.reason == "sidecar_exited"

    host_log = (tmp_path / "logs" / "host.log").read_text(encoding="utf-8")
    for output in (caplog.text, host_log):
        # The lines were forwarded, with each value masked.
        assert "token=[REDACTED]" in output
        assert "secret ECHO_KEY=[REDACTED]" in output
        assert "?[query removed]" in output
        assert TOKEN_PATTERN.search(output) is None
        assert ECHO_KEY not in output
        assert "query-secret-1234" not in output


def test_start_failure_spawn(manifest, tmp_path):
    host, error = _start_failure(manifest, tmp_path, [str(tmp_path / "no-such-python"), "-m", "keyside.sidecar"])
    assert error.reason == "sidecar_spawn_failed"
    assert host.sidecar_state["state"] == "failed"


def test_slow_sidecar_within_timeout(manifest, tmp_path):
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar("slow", delay_s=0.5)) as host:
        assert host.sidecar_state["state"] == "ready"
        assert host.sidecar_url is not None


def test_squatter_port_claim_gets_no_token(manifest, tmp_path, squatter):
    """A child that reports another listener's port fails closed; that listener is never contacted."""
    host, error = _start_failure(manifest, tmp_path, fake_sidecar("claim_port", claim_port=squatter.port))

    assert error.reason == "handshake_proof_invalid"
    assert host.sidecar_url is None
    assert squatter.connections == 0
    assert squatter.received == b""


def test_squatter_on_preferred_port(manifest, tmp_path, squatter, record):
    """With the preferred port taken, the sidecar binds another one, and the squatter receives nothing."""
    vault = memory_vault(manifest, {"ECHO_KEY": ECHO_KEY})
    with running_host(manifest, vault, tmp_path / "logs", preferred_port=squatter.port,
                      sidecar_command=fake_sidecar(record=record)) as host:
        url, token = host.sidecar_credentials()
        assert url != f"http://127.0.0.1:{squatter.port}"
        assert http_get(f"{url}/api/status", token)[0] == 200
        host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "OTHER_KEY", "value": "ok-after-squat-1"})

    assert starts(record)[0]["preferred_port"] == squatter.port
    assert squatter.connections == 0
    assert squatter.received == b""


def test_killed_sidecar_restarts_with_new_token(manifest, tmp_path, record):
    vault = memory_vault(manifest, {"ECHO_KEY": ECHO_KEY})
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar(record=record)) as host:
        old_url, old_token = host.invoke("main", f"{PAGE_ORIGIN}/", "local_api", {}).values()
        old_pid = host.sidecar_state["pid"]

        os.kill(old_pid, signal.SIGKILL)
        wait_until(lambda: host.sidecar_state["pid"] not in (None, old_pid) and host.sidecar_state["state"] == "ready")

        new_url, new_token = host.invoke("main", f"{PAGE_ORIGIN}/", "local_api", {}).values()
        assert new_token != old_token
        assert host.sidecar_state["restarts"] == 1
        assert http_get(f"{new_url}/api/status", new_token)[0] == 200
        assert http_get(f"{new_url}/api/status", old_token)[0] == 401
        if new_url != old_url:
            with pytest.raises(OSError):
                http_get(f"{old_url}/api/status", old_token, timeout_s=2.0)


def test_crash_loop_ends_in_failed_state(manifest, tmp_path, record):
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs",
                      sidecar_command=fake_sidecar("crash_after", delay_s=0.2, record=record)) as host:
        wait_until(lambda: host.sidecar_state["state"] == "failed")
        state = host.sidecar_state
        assert state["reason"] == "restart_limit_reached"
        assert "sidecar_exited" in state["message"]
        assert state["url"] is None
        with pytest.raises(IpcError) as caught:
            host.invoke("main", f"{PAGE_ORIGIN}/", "local_api", {})
        assert caught.value.reason == "sidecar_unavailable"

    launched = starts(record)
    assert len(launched) == FAST.max_quick_failures
    for entry in launched:
        assert process_gone(entry["pid"])


def test_crash_states_are_reported(manifest, tmp_path):
    seen: list[str] = []
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar()) as host:
        host.on_sidecar_state(lambda state: seen.append(state["state"]))
        pid = host.sidecar_state["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: seen[-1:] == ["ready"])
    assert seen[0] == "restarting"
    assert seen[-1] == "stopped"


def test_hung_sidecar_is_killed_on_stop(manifest, tmp_path):
    settings = dataclasses.replace(FAST, stop_grace_s=0.5, eof_exit_s=0.3)
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs", settings=settings,
                      sidecar_command=fake_sidecar("hang")) as host:
        pid = host.sidecar_state["pid"]
    assert process_gone(pid)
    assert host.sidecar_state["state"] == "stopped"
    log_text = (tmp_path / "logs" / "host.log").read_text(encoding="utf-8")
    assert f"sidecar ignored SIGTERM, killing it pid={pid}" in log_text


def test_stop_ends_sidecar(manifest, tmp_path):
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar()) as host:
        pid = host.sidecar_state["pid"]
    assert process_gone(pid)
    assert host.sidecar_state["state"] == "stopped"
    assert host.sidecar_url is None


def test_child_env_is_minimal(manifest, tmp_path, record, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-123")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    vault = memory_vault(manifest, {"ECHO_KEY": ECHO_KEY})
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar(record=record)) as host:
        token = host.sidecar_credentials()[1]

    env = starts(record)[0]["env"]
    argv = starts(record)[0]["argv"]
    allowed = set(CHILD_ENV_NAMES) | {"PYTHONPATH"}
    assert set(env) - allowed <= {"LC_CTYPE"}  # CPython may set LC_CTYPE itself when coercing the C locale
    assert "OPENAI_API_KEY" not in env
    assert "HTTPS_PROXY" not in env
    for text in list(env.values()) + argv:
        assert token not in text
        assert ECHO_KEY not in text


def test_child_env_pythonpath_only_for_keyside(tmp_path):
    env = child_environment({"PATH": "/usr/bin", "PYTHONPATH": str(tmp_path), "SECRET_TOKEN": "x"})
    assert env == {"PATH": "/usr/bin"}


def test_exec_tokens_survive_restart(manifest, tmp_path, record):
    vault = memory_vault(manifest, {"ECHO_KEY": ECHO_KEY})
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar(record=record)) as host:
        token_id, token = host.issue_exec_token(["echo"])
        old_pid = host.sidecar_state["pid"]
        os.kill(old_pid, signal.SIGKILL)
        wait_until(lambda: host.sidecar_state["pid"] not in (None, old_pid) and host.sidecar_state["state"] == "ready")

        assert http_get(f"{host.sidecar_url}/api/status", token)[0] == 200
        host.revoke_exec_token(token_id)
        assert http_get(f"{host.sidecar_url}/api/status", token)[0] == 401

    new_pid = starts(record)[-1]["pid"]
    adds = [e for e in read_records(record) if e.get("type") == "add_token" and e["pid"] == new_pid]
    assert [e["token_id"] for e in adds] == [token_id]


def test_exec_token_unknown_service(manifest, tmp_path):
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar()) as host:
        with pytest.raises(IpcError) as caught:
            host.issue_exec_token(["nope"])
        assert caught.value.reason == "unknown_service"
        with pytest.raises(IpcError) as caught:
            host.issue_exec_token([])
        assert caught.value.reason == "invalid_arguments"


def test_origin_added_after_start_is_pushed(manifest, tmp_path, record):
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar(record=record)) as host:
        pid = host.sidecar_state["pid"]
        host.add_page_origin("http://127.0.0.1:9001", "settings")
        assert host.sidecar_state["pid"] == pid
        assert host.invoke("settings", "http://127.0.0.1:9001/settings.html", "runtime_info", {})

    pushes = [e for e in read_records(record) if e.get("type") == "set_origins"]
    assert len(pushes) == 1


def test_origin_added_after_start_restarts_old_sidecar(manifest, tmp_path, record):
    """A sidecar that cannot take new origins is replaced by one that gets them in its bootstrap."""
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs",
                      sidecar_command=fake_sidecar("no_origins", record=record)) as host:
        pid = host.sidecar_state["pid"]
        host.add_page_origin("http://127.0.0.1:9002")
        wait_until(lambda: host.sidecar_state["pid"] not in (None, pid) and host.sidecar_state["state"] == "ready")
        assert host.sidecar_state["restarts"] == 1

    assert "http://127.0.0.1:9002" in starts(record)[-1]["origins"]


def test_secret_set_during_restart_reaches_new_sidecar(manifest, tmp_path, record):
    """A change made while a sidecar starts is in its bootstrap or pushed before it is ready."""
    settings = dataclasses.replace(FAST, handshake_timeout_s=5.0)
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs", settings=settings,
                      sidecar_command=fake_sidecar("slow", delay_s=0.8, record=record)) as host:
        old_pid = host.sidecar_state["pid"]
        os.kill(old_pid, signal.SIGKILL)
        wait_until(lambda: host.sidecar_state["state"] == "restarting", interval_s=0.005)
        result = host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "OTHER_KEY", "value": "ok-mid-restart-1"})
        assert result["sidecar"] in ("pending", "updated")
        wait_until(lambda: host.sidecar_state["state"] == "ready")
        new_pid = host.sidecar_state["pid"]

    new_start = next(e for e in starts(record) if e["pid"] == new_pid)
    pushed = [e for e in read_records(record)
              if e.get("type") == "set_secret" and e["pid"] == new_pid and e["name"] == "OTHER_KEY"]
    assert "OTHER_KEY" in new_start["secret_names"] or pushed


def test_vault_write_failure_changes_nothing(manifest, tmp_path, record):
    vault = Vault(manifest, FailingStore({"ECHO_KEY": ECHO_KEY}))
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar(record=record)) as host:
        with pytest.raises(IpcError) as caught:
            host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": "ek-new-value-000"})
        assert caught.value.reason == "vault_write_failed"
        assert vault.get("ECHO_KEY") == ECHO_KEY
        with pytest.raises(IpcError) as caught:
            host.invoke("settings", SETTINGS_URL, "delete_secret", {"name": "ECHO_KEY"})
        assert caught.value.reason == "vault_write_failed"
        assert vault.get("ECHO_KEY") == ECHO_KEY

    controls = [e.get("type") for e in read_records(record) if e.get("event") == "control"]
    assert "set_secret" not in controls
    assert "delete_secret" not in controls


def test_start_timeout_fails_closed(manifest, tmp_path, record):
    host = Host(manifest, memory_vault(manifest), log_dir=tmp_path / "logs", settings=FAST,
                sidecar_command=fake_sidecar("slow", delay_s=3.0, record=record))
    with pytest.raises(SidecarError) as caught:
        host.start(timeout_s=0.5)
    assert caught.value.reason == "sidecar_start_timeout"
    assert host.sidecar_state["state"] == "failed"
    assert host.sidecar_state["reason"] == "sidecar_start_timeout"
    for entry in starts(record):
        assert process_gone(entry["pid"])


class LockedStore(MemoryStore):
    """A store whose first read fails the way a locked OS keyring does."""

    def load(self):
        raise VaultError("The keyring is locked (test store).", reason="vault_locked", fix="unlock it")


def test_vault_load_failure_starts_nothing(manifest, tmp_path, record):
    host = Host(manifest, Vault(manifest, LockedStore()), log_dir=tmp_path / "logs",
                sidecar_command=fake_sidecar(record=record))
    with pytest.raises(VaultError) as caught:
        host.start()
    assert caught.value.reason == "vault_locked"
    assert starts(record) == []
    with pytest.raises(IpcError) as not_running:
        host.invoke("main", f"{PAGE_ORIGIN}/", "runtime_info", {})
    assert not_running.value.reason == "host_not_running"
    host.stop()


def test_backoff_doubles_to_cap():
    settings = dataclasses.replace(FAST, backoff_initial_s=0.5, backoff_max_s=3.0)
    supervisor = Supervisor(dict, settings=settings)
    delays = []
    for failures in range(1, 7):
        supervisor._failures = failures
        delays.append(supervisor._backoff_s())
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_stable_runs_reset_failure_count(manifest, tmp_path):
    """Crashes after a stable run are restarted again and again; only quick ones add up."""
    settings = dataclasses.replace(FAST, stable_run_s=0.2, max_quick_failures=2)
    with running_host(manifest, memory_vault(manifest), tmp_path / "logs", settings=settings,
                      sidecar_command=fake_sidecar("crash_after", delay_s=0.4)) as host:
        wait_until(lambda: host.sidecar_state["restarts"] >= 3)
        assert host.sidecar_state["state"] != "failed"

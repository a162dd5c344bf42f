"""The host with the real sidecar (`python -m keyside.sidecar`) and a fake provider on loopback.

These tests follow a key from the UI commands to what the upstream receives: saved keys are
injected, failed vault writes change nothing, a restarted sidecar rejects the old token, a host
killed with SIGKILL leaves no sidecar, and no log file contains a key or the token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import need
from keyside.host import Host, IpcError
from keyside.vault import Vault, open_vault
from test_host_support import (
    DATA,
    ECHO_KEY,
    OTHER_KEY,
    PAGE_ORIGIN,
    FailingStore,
    http_get,
    memory_vault,
    process_gone,
    real_sidecar_available,
    running_host,
    wait_until,
    write_app,
)
from test_supervisor import Squatter
from upstreams import BackgroundUpstreams, UpstreamServer

APP_URL = f"{PAGE_ORIGIN}/index.html"
SETTINGS_URL = f"{PAGE_ORIGIN}/settings.html"
HOST_SCRIPT = DATA / "ipc_host_script.py"
SCRIPT_ECHO_KEY = "ek-script-0123456789-abcdef"
# A session token printed anywhere would look like this: 64 hex digits.
TOKEN_PATTERN = re.compile(r"\b[0-9a-f]{64}\b")


@pytest.fixture(autouse=True)
def _real_sidecar():
    need(real_sidecar_available(), "the keyside.sidecar package is not installed")


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with BackgroundUpstreams(UpstreamServer(key=ECHO_KEY)) as (server,):
        yield server


@pytest.fixture
def app(tmp_path, upstream):
    return write_app(tmp_path / "app", upstream.port)


def _fetch(host: Host, path: str) -> tuple[int, bytes]:
    credentials = host.invoke("main", APP_URL, "local_api", {})
    return http_get(f"{credentials['url']}/api/svc/echo{path}", credentials["token"])


def _injected_keys(upstream: UpstreamServer, marker: str) -> list[str | None]:
    return [r.header("X-Api-Key") for r in upstream.requests if r.path.endswith(marker)]


def test_stored_key_is_injected(app, tmp_path, upstream):
    with running_host(app, memory_vault(app, {"ECHO_KEY": ECHO_KEY}), tmp_path / "logs") as host:
        status, body = _fetch(host, "/header/stored")
    assert status == 200
    assert _injected_keys(upstream, "/header/stored") == [ECHO_KEY]
    assert ECHO_KEY.encode() not in body


def test_set_secret_reaches_sidecar(app, tmp_path, upstream):
    new_key = "ek-rotated-0000-1111-2222"
    with running_host(app, memory_vault(app, {"ECHO_KEY": ECHO_KEY}), tmp_path / "logs") as host:
        result = host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": f"  {new_key}\t"})
        assert result == {"name": "ECHO_KEY", "configured": True, "sidecar": "updated"}
        status, _ = _fetch(host, "/echo/after-set")
    assert status == 200
    assert _injected_keys(upstream, "/echo/after-set") == [new_key]


def test_vault_failure_leaves_sidecar_unchanged(app, tmp_path, upstream):
    vault = Vault(app, FailingStore({"ECHO_KEY": ECHO_KEY}))
    with running_host(app, vault, tmp_path / "logs") as host:
        with pytest.raises(IpcError) as caught:
            host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": "ek-never-saved-0000"})
        assert caught.value.reason == "vault_write_failed"
        status, _ = _fetch(host, "/echo/after-failed-set")
        listed = host.invoke("settings", SETTINGS_URL, "list_secrets", {})
    assert status == 200
    assert _injected_keys(upstream, "/echo/after-failed-set") == [ECHO_KEY]
    assert vault.get("ECHO_KEY") == ECHO_KEY
    assert next(s for s in listed if s["name"] == "ECHO_KEY")["configured"] is True


def test_delete_secret_stops_injection(app, tmp_path, upstream):
    with running_host(app, memory_vault(app, {"ECHO_KEY": ECHO_KEY}), tmp_path / "logs") as host:
        result = host.invoke("settings", SETTINGS_URL, "delete_secret", {"name": "ECHO_KEY"})
        assert result == {"name": "ECHO_KEY", "deleted": True, "sidecar": "updated"}
        status, body = _fetch(host, "/echo/after-delete")
        again = host.invoke("settings", SETTINGS_URL, "delete_secret", {"name": "ECHO_KEY"})
    assert status == 424
    assert json.loads(body)["error"]["reason"] == "secret_not_configured"
    assert _injected_keys(upstream, "/echo/after-delete") == []
    assert again["deleted"] is False


def test_validate_secret_results(app, tmp_path):
    with running_host(app, memory_vault(app, {"ECHO_KEY": ECHO_KEY}), tmp_path / "logs") as host:
        stored = host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY"})
        wrong = host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY", "value": "ek-wrong-1234"})
        listed = host.invoke("settings", SETTINGS_URL, "list_secrets", {})
        with pytest.raises(IpcError) as no_probe:
            host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "OTHER_KEY", "value": "ok-some-1234"})

    assert stored["result"] == "valid"
    assert stored["service"] == "echo"
    assert wrong["result"] == "invalid"
    echo = next(s for s in listed if s["name"] == "ECHO_KEY")
    assert echo["last_validation"]["result"] == "valid"
    assert no_probe.value.reason == "validation_not_configured"


def test_validate_candidate_then_save(app, tmp_path):
    """A candidate checked before saving shows its result once it is the stored key."""
    with running_host(app, memory_vault(app), tmp_path / "logs") as host:
        checked = host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY", "value": ECHO_KEY})
        before = host.invoke("settings", SETTINGS_URL, "list_secrets", {})
        host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": ECHO_KEY})
        after = host.invoke("settings", SETTINGS_URL, "list_secrets", {})
    assert checked["result"] == "valid"
    assert next(s for s in before if s["name"] == "ECHO_KEY")["last_validation"] is None
    assert next(s for s in after if s["name"] == "ECHO_KEY")["last_validation"]["result"] == "valid"


def test_validate_unreachable_upstream(tmp_path):
    manifest = write_app(tmp_path / "app", upstream_port=9)
    with running_host(manifest, memory_vault(manifest), tmp_path / "logs") as host:
        result = host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY", "value": "ek-x-123456"})
    assert result["result"] == "unreachable"
    assert result["reason"]


def test_killed_sidecar_rejects_old_token(app, tmp_path):
    with running_host(app, memory_vault(app, {"ECHO_KEY": ECHO_KEY}), tmp_path / "logs") as host:
        old = host.invoke("main", APP_URL, "local_api", {})
        old_pid = host.sidecar_state["pid"]
        os.kill(old_pid, signal.SIGKILL)
        wait_until(lambda: host.sidecar_state["state"] == "ready" and host.sidecar_state["pid"] not in (None, old_pid))
        new = host.invoke("main", APP_URL, "local_api", {})

        assert new["token"] != old["token"]
        assert http_get(f"{new['url']}/api/status", new["token"])[0] == 200
        assert http_get(f"{new['url']}/api/status", old["token"])[0] == 401
        status, _ = _fetch(host, "/header/after-restart")
        assert status == 200


def test_stale_sidecar_is_not_adopted(app, tmp_path):
    """A second host asking for the port of a running sidecar starts its own, with its own token."""
    with running_host(app, memory_vault(app), tmp_path / "logs-a") as first:
        first_url, first_token = first.sidecar_credentials()
        port = int(first_url.rsplit(":", 1)[1])
        with running_host(app, memory_vault(app), tmp_path / "logs-b", preferred_port=port) as second:
            second_url, second_token = second.sidecar_credentials()
            assert second_url != first_url
            assert http_get(f"{second_url}/api/status", first_token)[0] == 401
            assert http_get(f"{first_url}/api/status", second_token)[0] == 401
            assert http_get(f"{second_url}/api/status", second_token)[0] == 200


def test_squatter_on_preferred_port_gets_nothing(app, tmp_path):
    squatter = Squatter()
    try:
        with running_host(app, memory_vault(app, {"ECHO_KEY": ECHO_KEY}), tmp_path / "logs",
                          preferred_port=squatter.port) as host:
            assert host.sidecar_url != f"http://127.0.0.1:{squatter.port}"
            status, _ = _fetch(host, "/header/squat")
            assert status == 200
    finally:
        squatter.close()
    assert squatter.connections == 0
    assert squatter.received == b""


def _spawn_host(app_dir: Path, log_dir: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(HOST_SCRIPT), str(app_dir), str(log_dir), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_host_killed_leaves_no_sidecar(app, tmp_path):
    process = _spawn_host(app.path.parent, tmp_path / "logs", "wait")
    try:
        started = json.loads(process.stdout.readline())
        sidecar_pid = started["pid"]
        assert not process_gone(sidecar_pid)
        process.kill()
        process.wait(timeout=10)
        # The sidecar exits on stdin EOF and also sets PR_SET_PDEATHSIG. The goal is one second
        # (measured in docs/host.md); the wait here is longer, so a busy machine does not flake.
        wait_until(lambda: process_gone(sidecar_pid), timeout_s=5.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_host_exit_without_stop_ends_sidecar(app, tmp_path):
    """The atexit hook stops the sidecar when the app exits without calling stop()."""
    process = _spawn_host(app.path.parent, tmp_path / "logs", "exit")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    sidecar_pid = json.loads(out.splitlines()[0])["pid"]
    wait_until(lambda: process_gone(sidecar_pid), timeout_s=5.0)


def test_run_headless_prints_url_not_token(app, tmp_path):
    process = _spawn_host(app.path.parent, tmp_path / "logs", "headless")
    try:
        first = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", first)
        assert match, first
        status, body = http_get(f"{match.group(0)}/api/health")
        assert status == 200
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    output = first + out + err
    assert TOKEN_PATTERN.search(output) is None
    assert SCRIPT_ECHO_KEY not in output


def test_cli_run_headless(app, tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    process = subprocess.Popen([sys.executable, "-m", "keyside", "run", str(app.path.parent), "--headless",
                                "--vault", "memory"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        first = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, first + process.stderr.read()
        assert http_get(f"{match.group(0)}/api/health")[0] == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert TOKEN_PATTERN.search(first + out + err) is None


def test_logs_hold_no_secret_or_token(app, tmp_path, upstream):
    log_dir = tmp_path / "logs"
    keyside_logger = logging.getLogger("keyside")
    previous = keyside_logger.level
    keyside_logger.setLevel(logging.DEBUG)
    new_key = "ek-logged-never-5555-6666"
    candidate = "ek-candidate-never-7777"
    try:
        with running_host(app, memory_vault(app, {"ECHO_KEY": ECHO_KEY, "OTHER_KEY": OTHER_KEY}), log_dir) as host:
            tokens = [host.sidecar_credentials()[1]]
            _fetch(host, "/header/logged?debug=1")
            host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": new_key})
            host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY", "value": candidate})
            with pytest.raises(IpcError):
                host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "NOT_DECLARED", "value": new_key})
            exec_id, exec_token = host.issue_exec_token(["echo"])
            tokens.append(exec_token)
            pid = host.sidecar_state["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: host.sidecar_state["state"] == "ready" and host.sidecar_state["pid"] != pid)
            tokens.append(host.sidecar_credentials()[1])
            host.revoke_exec_token(exec_id)
    finally:
        keyside_logger.setLevel(previous)

    files = sorted(path for path in log_dir.iterdir() if path.is_file())
    assert {"audit.log", "host.log", "sidecar.log"} <= {path.name for path in files}
    for path in files:
        text = path.read_text(encoding="utf-8")
        for value in [ECHO_KEY, OTHER_KEY, new_key, candidate, *tokens]:
            assert value not in text, f"{path.name} contains a secret value or token"
        assert "debug=1" not in text, f"{path.name} contains a URL query"
        if sys.platform != "win32":
            assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"


def _secret_service_running() -> bool:
    if os.environ.get("KEYSIDE_SECRET_SERVICE") == "1":
        return True
    try:
        import secretstorage

        connection = secretstorage.dbus_init()
        try:
            return secretstorage.check_service_availability(connection)
        finally:
            connection.close()
    except Exception:  # no session bus or no secretstorage: the test is skipped
        return False


@pytest.mark.secret_service
def test_system_vault_round_trip(tmp_path, upstream, monkeypatch):
    """A key saved through the host is in the OS keyring, and the next host's sidecar injects it."""
    need(_secret_service_running(), "no Secret Service on the session bus (run under scripts/netns-pytest)")
    need(shutil.which("secret-tool") is not None, "secret-tool (libsecret-tools) is not installed")
    import keyring
    from keyring.backends import SecretService

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(keyring.core, "_keyring_backend", SecretService.Keyring())
    app = write_app(tmp_path / "app", upstream.port, app_id=f"ipc-test-{uuid.uuid4().hex[:12]}")
    saved_key = "ek-system-vault-4242-abcd"
    try:
        with running_host(app, open_vault(app, "system"), tmp_path / "logs") as host:
            host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": saved_key})

        entries = subprocess.run(["secret-tool", "search", "--all", "service", app.keyring_service],
                                 capture_output=True, text=True, timeout=10)
        assert entries.stdout.count("[/") == 1

        with running_host(app, open_vault(app, "system"), tmp_path / "logs") as host:
            listed = host.invoke("settings", SETTINGS_URL, "list_secrets", {})
            status, _ = _fetch(host, "/echo/system-vault")
    finally:
        subprocess.run(["secret-tool", "clear", "service", app.keyring_service], check=False, timeout=10)

    assert next(s for s in listed if s["name"] == "ECHO_KEY")["configured"] is True
    assert status == 200
    assert _injected_keys(upstream, "/echo/system-vault") == [saved_key]


def test_sidecar_argv_and_env_hold_no_secret(app, tmp_path, monkeypatch):
    """The real sidecar's command line and environment, as the OS shows them, have no key or token."""
    need(Path("/proc/self/environ").exists(), "needs /proc (Linux)")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-environment-9999")
    with running_host(app, memory_vault(app, {"ECHO_KEY": ECHO_KEY}), tmp_path / "logs") as host:
        pid = host.sidecar_state["pid"]
        token = host.sidecar_credentials()[1]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    for value in (ECHO_KEY, token, "sk-host-environment-9999"):
        assert value.encode() not in cmdline
        assert value.encode() not in environ
    assert b"OPENAI_API_KEY" not in environ

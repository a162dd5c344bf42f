"""The order of `keyside exec`'s steps around the host: token, child, revoke, stop.

The host here is a recording stand-in, so a test can make a step fail or a signal arrive at
an exact point. test_exec_run.py runs the same steps with the real host and sidecar.
"""

from __future__ import annotations

import io
import os
import signal
import string
import sys
import time
import tomllib
from pathlib import Path

import pytest

from keyside.exec import ExecError, run_exec
from keyside.manifest import Manifest, parse_manifest
from keyside.vault import Vault, open_vault

TEMPLATE = Path(__file__).parent / "data" / "exec_app" / "keyside.toml.template"
OPENAI_KEY = "sk-exec-runner-0123456789abcdef"
TOKEN = "b" * 64

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signal handling is POSIX-only")


class RecordingHost:
    """A stand-in for keyside.host.Host that records the calls keyside exec makes."""

    def __init__(self, *, url: str | None = "http://127.0.0.1:41001", signal_on_start: int | None = None,
                 revoke_error: Exception | None = None):
        self.calls: list[str] = []
        self.url = url
        self.signal_on_start = signal_on_start
        self.revoke_error = revoke_error
        self.services: list[str] = []

    @property
    def sidecar_url(self) -> str | None:
        return self.url

    def start(self, timeout_s: float = 10.0) -> None:
        self.calls.append("start")
        if self.signal_on_start is not None:
            os.kill(os.getpid(), self.signal_on_start)
            time.sleep(5)  # the signal handler raises before this ends

    def issue_exec_token(self, services: list[str]) -> tuple[str, str]:
        self.calls.append("issue")
        self.services = list(services)
        return "exec-1", TOKEN

    def revoke_exec_token(self, token_id: str) -> None:
        self.calls.append(f"revoke {token_id}")
        if self.revoke_error is not None:
            raise self.revoke_error

    def stop(self) -> None:
        self.calls.append("stop")


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    text = string.Template(TEMPLATE.read_text()).substitute(openai_origin="http://127.0.0.1:9",
                                                            anthropic_origin="http://127.0.0.1:9")
    return parse_manifest(tmp_path / "keyside.toml", tomllib.loads(text))


@pytest.fixture
def vault(manifest: Manifest) -> Vault:
    vault = open_vault(manifest, "memory")
    vault.set("OPENAI_API_KEY", OPENAI_KEY)
    return vault


def run(manifest: Manifest, vault: Vault, host: RecordingHost, command: list[str], **kwargs) -> int:
    return run_exec(manifest, vault, command, host_factory=lambda m, v: host,
                    parent_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, **kwargs)


def test_runner_steps_in_order(manifest: Manifest, vault: Vault) -> None:
    host = RecordingHost()
    code = "import os, sys; sys.exit(7 if os.environ['KEYSIDE_TOKEN'] == 'b' * 64 else 1)"
    assert run(manifest, vault, host, [sys.executable, "-c", code], services=["openai"]) == 7
    assert host.calls == ["start", "issue", "revoke exec-1", "stop"]
    assert host.services == ["openai"]


def test_runner_default_services(manifest: Manifest, vault: Vault) -> None:
    host = RecordingHost()
    assert run(manifest, vault, host, [sys.executable, "-c", "pass"]) == 0
    assert host.services == ["openai", "local-llm"]


def test_runner_signal_during_start(manifest: Manifest, vault: Vault, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    host = RecordingHost(signal_on_start=signal.SIGTERM)
    stderr = io.StringIO()
    code = run(manifest, vault, host, [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], stderr=stderr)
    assert code == 128 + signal.SIGTERM
    assert host.calls == ["start", "stop"]
    assert not marker.exists()
    assert "SIGTERM received before the command started" in stderr.getvalue()


def test_runner_revoke_failure_keeps_exit_code(manifest: Manifest, vault: Vault) -> None:
    host = RecordingHost(revoke_error=RuntimeError("sidecar gone"))
    assert run(manifest, vault, host, [sys.executable, "-c", "raise SystemExit(5)"]) == 5
    assert host.calls == ["start", "issue", "revoke exec-1", "stop"]


def test_runner_command_not_found_cleans_up(manifest: Manifest, vault: Vault) -> None:
    host = RecordingHost()
    with pytest.raises(ExecError) as caught:
        run(manifest, vault, host, ["/nonexistent/keyside-test-program"])
    assert caught.value.exit_code == 127
    assert host.calls == ["start", "issue", "revoke exec-1", "stop"]


def test_runner_no_sidecar_url(manifest: Manifest, vault: Vault) -> None:
    host = RecordingHost(url=None)
    with pytest.raises(ExecError) as caught:
        run(manifest, vault, host, [sys.executable, "-c", "pass"])
    assert caught.value.reason == "sidecar_unavailable"
    assert host.calls == ["start", "stop"]


def test_runner_checks_before_start(manifest: Manifest, vault: Vault) -> None:
    host = RecordingHost()
    with pytest.raises(ExecError) as caught:
        run(manifest, vault, host, ["echo", OPENAI_KEY])
    assert caught.value.reason == "secret_in_arguments"
    assert host.calls == []


def test_runner_empty_command(manifest: Manifest, vault: Vault) -> None:
    with pytest.raises(ExecError) as caught:
        run(manifest, vault, RecordingHost(), [])
    assert caught.value.exit_code == 2


def test_runner_reports_removed_variables(manifest: Manifest, vault: Vault) -> None:
    stderr = io.StringIO()
    host = RecordingHost()
    code = run_exec(manifest, vault, [sys.executable, "-c", "import os, sys; sys.exit('LEAK' in os.environ)"],
                    host_factory=lambda m, v: host, stderr=stderr,
                    parent_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LEAK": OPENAI_KEY})
    assert code == 0
    assert stderr.getvalue() == "keyside: LEAK is not passed to the command: its value contains a stored secret.\n"

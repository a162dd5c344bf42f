"""The child process of `keyside exec`: exit codes, signal relay and the relay's phases.

These tests call run_child and SignalRelay in the pytest process (no host, no sidecar), with
real child processes. The signals come from a helper thread that signals this process, as a
user's `kill` would signal keyside exec.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from keyside.exec import EXIT_SIGNAL_BASE, ExecError, Interrupted, SignalRelay, run_child

SCRIPTS = Path(__file__).parent / "data" / "exec_scripts"
SIGNALS_SCRIPT = str(SCRIPTS / "signals.py")
# Bounds for waiting on a child's ready file; a healthy child writes it in well under a second.
READY_TIMEOUT_S = 20.0

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signal relay is POSIX-only")


@pytest.fixture(autouse=True)
def _no_controlling_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Run from a terminal, pytest is in its foreground, and the relay would then leave SIGINT,
    # SIGQUIT and SIGHUP to the terminal. These tests signal the process directly, as a
    # supervisor without a terminal does; test_exec_terminal.py covers the terminal.
    monkeypatch.setattr("keyside.exec.child.open_controlling_terminal", lambda: None)


def child_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}


def signal_self_when_ready(ready_file: Path, signum: int) -> threading.Thread:
    """Send `signum` to this process once the child has created `ready_file`."""

    def wait_and_signal() -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=wait_and_signal, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("code", "expected"), [
    pytest.param("raise SystemExit(0)", 0, id="zero"),
    pytest.param("raise SystemExit(3)", 3, id="three"),
    pytest.param("raise SystemExit(255)", 255, id="max"),
    pytest.param("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", EXIT_SIGNAL_BASE + 9, id="sigkill"),
    pytest.param("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", EXIT_SIGNAL_BASE + 11, id="sigsegv"),
])
def test_run_child_exit_code(code: str, expected: int) -> None:
    with SignalRelay() as relay:
        assert run_child([sys.executable, "-c", code], child_env(), relay) == expected


def test_run_child_exact_environment() -> None:
    code = "import os, sys; sys.exit(0 if dict(os.environ).get('ONLY') == 'this' and 'HOME' not in os.environ else 4)"
    with SignalRelay() as relay:
        assert run_child([sys.executable, "-c", code], {**child_env(), "ONLY": "this"}, relay) == 0


def test_run_child_shares_process_group() -> None:
    # One process group keeps terminal job control and pipelines as they are without keyside.
    code = f"import os, sys; sys.exit(0 if os.getpgrp() == {os.getpgrp()} else 5)"
    with SignalRelay() as relay:
        assert run_child([sys.executable, "-c", code], child_env(), relay) == 0


@pytest.mark.parametrize(("command", "reason", "exit_code"), [
    pytest.param(["/nonexistent/keyside-test-program"], "command_not_found", 127, id="not-found"),
    pytest.param([str(SCRIPTS / "report.py")], "command_not_executable", 126, id="not-executable"),
])
def test_run_child_cannot_start(command: list[str], reason: str, exit_code: int) -> None:
    with SignalRelay() as relay, pytest.raises(ExecError) as caught:
        run_child(command, child_env(), relay)
    assert caught.value.reason == reason
    assert caught.value.exit_code == exit_code


RELAYED = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2]


@pytest.mark.parametrize("signum", RELAYED, ids=[s.name for s in RELAYED])
def test_run_child_relays_signal(tmp_path: Path, capfd: pytest.CaptureFixture[str], signum: signal.Signals) -> None:
    ready_file = tmp_path / "ready"
    signal_self_when_ready(ready_file, signum)
    with SignalRelay() as relay:
        exit_code = run_child([sys.executable, SIGNALS_SCRIPT, "exit", str(ready_file)], child_env(), relay)
    output = capfd.readouterr().out
    assert exit_code == 10 + signum
    assert output.count(f"got {signum.name}") == 1


def test_run_child_signal_kills_child(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready"
    signal_self_when_ready(ready_file, signal.SIGTERM)
    with SignalRelay() as relay:
        exit_code = run_child([sys.executable, SIGNALS_SCRIPT, "die", str(ready_file)], child_env(), relay)
    assert exit_code == EXIT_SIGNAL_BASE + signal.SIGTERM


def test_relay_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with SignalRelay():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_relay_interrupts_start() -> None:
    with SignalRelay(), pytest.raises(Interrupted) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        # The handler runs at the next bytecode boundary of the main thread.
        time.sleep(1)
    assert caught.value.signum == signal.SIGTERM
    assert caught.value.exit_code == EXIT_SIGNAL_BASE + signal.SIGTERM


def test_relay_second_signal_ignored_after_interrupt() -> None:
    with SignalRelay():
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        # Cleanup after an interrupted start must not be interrupted again.
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)


def test_relay_queues_signals_while_spawning(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import subprocess

    ready_file = tmp_path / "ready"
    with SignalRelay() as relay:
        relay.spawning()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        child = subprocess.Popen([sys.executable, SIGNALS_SCRIPT, "exit", str(ready_file)], env=child_env())
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        relay.attach(child.pid, None)
        exit_code = child.wait(timeout=READY_TIMEOUT_S)
        relay.finish()
    assert exit_code == 10 + signal.SIGUSR1
    assert capfd.readouterr().out.count("got SIGUSR1") == 1


def _gone(pid: int) -> bool:
    """Return True when `pid` has exited (a zombie waiting for its new parent counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux-only")
def test_child_stops_when_exec_is_killed(tmp_path: Path) -> None:
    # keyside exec killed with SIGKILL cannot relay anything, so the kernel's parent-death signal
    # must stop the command, which would otherwise run on with a dead token.
    ready_file = tmp_path / "ready"
    driver = subprocess.Popen([sys.executable, str(SCRIPTS / "run_child_driver.py"), sys.executable,
                               SIGNALS_SCRIPT, "die", str(ready_file)], env={**child_env(), **_python_path()},
                              stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready_file.exists(), "the child never became ready"
        children = Path(f"/proc/{driver.pid}/task/{driver.pid}/children").read_text().split()
        assert len(children) == 1
        child_pid = int(children[0])
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(5)
        deadline = time.monotonic() + 5
        while not _gone(child_pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _gone(child_pid), "the command kept running after keyside exec was killed"
    finally:
        driver.kill()
        driver.wait(5)


def _python_path() -> dict[str, str]:
    # The driver imports keyside from this checkout, installed or not.
    source = str(Path(__file__).resolve().parents[1] / "src")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}

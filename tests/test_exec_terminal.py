"""`keyside exec` on a terminal: one job with its child for the terminal and the shell.

Each test starts the run_child driver, or an interactive bash that starts it, as the session
leader on a fresh pseudo-terminal (`setsid --ctty`). Then it types into the terminal what a user
would: Ctrl-C, Ctrl-Z, `fg`, input lines.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import need

SCRIPTS = Path(__file__).parent / "data" / "exec_scripts"
# Upper bound for each expected event; a healthy run takes well under a second per step.
STEP_TIMEOUT_S = 20.0
CTRL_C = b"\x03"
CTRL_Z = b"\x1a"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="job control is POSIX-only")


class Terminal:
    """A pseudo-terminal whose session leader is the run_child driver."""

    def __init__(self, argv: list[str], **extra_env: str):
        self.master, slave = os.openpty()
        self.output = b""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra_env}
        self.process = subprocess.Popen(["setsid", "--ctty", "--wait", *argv], stdin=slave, stdout=slave,
                                        stderr=slave, env=env, close_fds=True)
        os.close(slave)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_until(self, text: str) -> str:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while text.encode() not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} did not appear on the terminal; output so far: {self.output!r}")
            readable, _, _ = select.select([self.master], [], [], remaining)
            if readable:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:  # EIO: every slave descriptor is closed
                    raise AssertionError(f"terminal closed before {text!r}; output: {self.output!r}") from None
        return self.output.decode("utf-8", "replace")

    def read_until_match(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while (match := re.search(pattern, self.output.decode("utf-8", "replace"))) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} did not match the terminal output: {self.output!r}")
            readable, _, _ = select.select([self.master], [], [], 0.05)
            if readable:
                self.output += os.read(self.master, 4096)
        return match

    def wait(self) -> int:
        return self.process.wait(timeout=STEP_TIMEOUT_S)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STEP_TIMEOUT_S)
        os.close(self.master)


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def wait_for_state(pid: int, state: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while process_state(pid) != state:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not reach state {state}")
        time.sleep(0.01)


DRIVER = [sys.executable, str(SCRIPTS / "run_child_driver.py")]
DRIVER_COMMAND = [*DRIVER, sys.executable, str(SCRIPTS / "signals.py"), "count"]


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    need(shutil.which("setsid") is not None, "setsid (util-linux) is needed to give a process a terminal")
    session = Terminal(DRIVER_COMMAND)
    yield session
    session.close()


@pytest.fixture
def shell() -> Iterator[Terminal]:
    """An interactive bash with job control on its own terminal."""
    need(shutil.which("setsid") is not None, "setsid (util-linux) is needed to give a process a terminal")
    need(shutil.which("bash") is not None, "bash is needed for the job control tests")
    session = Terminal(["bash", "--norc", "--noprofile", "-i"], PS1="$ ", TERM="dumb")
    session.read_until("$ ")
    yield session
    session.close()


def test_terminal_ctrl_c_reaches_child_once(terminal: Terminal) -> None:
    # The terminal sends SIGINT to keyside exec and the child; keyside exec must not relay it.
    terminal.read_until("ready")
    terminal.type(CTRL_C)
    terminal.read_until("got SIGINT")
    terminal.type(b"quit\n")
    output = terminal.read_until("read quit")

    assert terminal.wait() == 0
    assert output.count("got SIGINT") == 1


def test_terminal_child_reads_input(terminal: Terminal) -> None:
    terminal.read_until("ready")
    terminal.type(b"hello\n")
    terminal.read_until("read hello")
    terminal.type(b"quit\n")
    terminal.read_until("read quit")
    assert terminal.wait() == 0


def test_terminal_sigterm_relayed_once(terminal: Terminal) -> None:
    # SIGTERM does not come from the terminal, so keyside exec relays it even in the foreground.
    terminal.read_until("ready")
    os.kill(terminal.process.pid, signal.SIGTERM)
    terminal.read_until("got SIGTERM")
    terminal.type(b"quit\n")
    output = terminal.read_until("read quit")

    assert terminal.wait() == 0
    assert output.count("got SIGTERM") == 1


def test_shell_ctrl_z_then_fg(shell: Terminal) -> None:
    shell.type(shlex.join(DRIVER_COMMAND).encode() + b"\n")
    shell.read_until("ready")
    shell.type(CTRL_Z)
    shell.read_until("Stopped")

    shell.type(b"fg\n")
    shell.type(b"hello\n")
    shell.read_until("read hello")
    shell.type(b"quit\n")
    shell.read_until("read quit")
    shell.type(b"echo exit=$?\n")
    shell.read_until("exit=0")


def test_shell_background_read_then_fg(shell: Terminal) -> None:
    # Started with &, the child reads the terminal from the background and is stopped by
    # SIGTTIN. `fg` must give it the terminal, just as for a command started without keyside.
    shell.type(shlex.join(DRIVER_COMMAND).encode() + b" &\n")
    shell.read_until("ready")
    # bash prints "[1] PID" for the background job.
    job = shell.read_until_match(r"\[1\] (\d+)\s")
    wait_for_state(int(job.group(1)), "T")

    shell.type(b"fg\n")
    shell.type(b"hello\n")
    shell.read_until("read hello")
    shell.type(b"quit\n")
    shell.read_until("read quit")
    shell.type(b"echo exit=$?\n")
    shell.read_until("exit=0")


def test_shell_script_stops_on_ctrl_c(shell: Terminal) -> None:
    # A script stops when its foreground command dies of Ctrl-C, with keyside as without it.
    command = shlex.join([*DRIVER, sys.executable, str(SCRIPTS / "signals.py"), "die"])
    script = f"{command}; echo after=$?"
    shell.type(f"bash -c {shlex.quote(script)}\n".encode())
    shell.read_until("ready")
    shell.type(CTRL_C)
    shell.read_until_match(r"\^C[^$]*\$ ")
    shell.type(b"echo script=$?\n")

    status = shell.read_until_match(r"script=(\d+)")
    assert status.group(1) == "130"
    assert re.search(r"after=\d", shell.output.decode("utf-8", "replace")) is None

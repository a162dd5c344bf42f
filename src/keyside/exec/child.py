"""Run the command of `keyside exec` as a child process and relay signals to it.

The child stays in keyside exec's process group, so for the terminal and the shell the two are
one job, as if the shell had run the command itself. Ctrl-C, Ctrl-\\ and Ctrl-Z reach both
straight from the terminal, the child can read the terminal, and `fg`, `bg`, `&` and pipelines
behave as usual. Other signals sent to keyside exec (kill, a process supervisor, a CI runner
that cancels a job) are relayed to the child's process.

Python cannot tell who sent a signal, so one rule decides what to relay. SIGINT, SIGQUIT and
SIGHUP are the signals a terminal sends to its whole foreground process group. While keyside
exec is in that group, the child got them from the terminal already, and relaying them would
deliver them twice. So they are relayed only when keyside exec is not in the foreground of a
terminal. NOTE: the rule has two gaps. A SIGINT, SIGQUIT or SIGHUP sent to keyside exec alone
while it runs in the foreground of a terminal does not reach the child. A signal sent to the
whole process group from elsewhere reaches the child twice.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from types import FrameType

from keyside.exec.environment import COMMAND_NOT_EXECUTABLE, COMMAND_NOT_FOUND, ExecError
from keyside.parent_death import child_death_hook

logger = logging.getLogger(__name__)

# Signals that keyside exec passes on to the child instead of acting on them. SIGUSR1 and
# SIGUSR2 are relayed too, because their default action would end keyside exec and the sidecar
# with it while the child keeps running.
if os.name == "posix":
    RELAYED_SIGNALS: tuple[signal.Signals, ...] = (
        signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
    )
    # The relayed signals that a terminal sends to its whole foreground process group.
    TERMINAL_SIGNALS: frozenset[int] = frozenset({signal.SIGINT, signal.SIGQUIT, signal.SIGHUP})
else:
    RELAYED_SIGNALS = (signal.SIGINT,)
    TERMINAL_SIGNALS = frozenset({signal.SIGINT})

# A child killed by signal N gives exit code 128 + N, as POSIX shells report it.
EXIT_SIGNAL_BASE = 128
# Exit codes for a command that cannot be started, as POSIX shells use them.
EXIT_COMMAND_NOT_FOUND = 127
EXIT_COMMAND_NOT_EXECUTABLE = 126

_STARTING = "starting"
_SPAWNING = "spawning"
_RUNNING = "running"
_FINISHED = "finished"


class Interrupted(BaseException):
    """A relayed signal arrived before there was a child to relay it to.

    It derives from BaseException so that a broad `except Exception` in start-up code does not
    swallow it, as with KeyboardInterrupt.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_SIGNAL_BASE + self.signum


def open_controlling_terminal() -> int | None:
    """Open the controlling terminal (/dev/tty) and return its fd, or None without one.

    The fd is not inherited by children. The caller closes it.
    """
    if os.name != "posix":
        return None
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None


class SignalRelay:
    """Handlers for RELAYED_SIGNALS whose action depends on how far the run has got.

    Before the child is spawned a signal raises Interrupted, so start-up stops and cleans up.
    While Popen runs, signals are queued, because an exception inside Popen could lose the pid
    of a child that already exists. Once the child runs they go to it, queued ones first, unless
    the terminal sent them to the child already (see the module docs). After the child has
    exited they are logged and ignored, so cleanup (revoking the token, stopping the sidecar)
    always completes. Python runs these handlers in the main thread only, so the relay must be
    installed from the main thread.
    """

    def __init__(self) -> None:
        self._phase = _STARTING
        self._child_pid: int | None = None
        self._terminal: int | None = None
        self._pending: list[int] = []
        self._previous: dict[int, object] = {}
        # Set when the child died of a signal that its terminal sent to the whole job.
        self.terminal_signal: int | None = None

    def __enter__(self) -> SignalRelay:
        for signum in RELAYED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def spawning(self) -> None:
        self._phase = _SPAWNING

    def attach(self, pid: int, terminal: int | None) -> None:
        """Relay signals to `pid` from now on, starting with any queued while it was spawned.

        `terminal` is an open fd of the controlling terminal, or None when there is none.
        """
        self._child_pid = pid
        self._terminal = terminal
        self._phase = _RUNNING
        pending, self._pending = self._pending, []
        for signum in pending:
            self._forward(signum)

    def finish(self) -> None:
        self._phase = _FINISHED

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._phase == _STARTING:
            self._phase = _FINISHED
            raise Interrupted(signum)
        if self._phase == _SPAWNING:
            self._pending.append(signum)
        elif self._phase == _RUNNING:
            self._forward(signum)
        else:
            logger.info("signal ignored during shutdown signal=%s", signal.Signals(signum).name)

    def in_terminal_foreground(self) -> bool:
        if self._terminal is None:
            return False
        try:
            return os.tcgetpgrp(self._terminal) == os.getpgrp()
        except OSError:
            return False

    def _forward(self, signum: int) -> None:
        if self._child_pid is None:
            return
        name = signal.Signals(signum).name
        if os.name != "posix":
            # NOTE: untested. A console Ctrl-C reaches every process on the console, the child
            # included, so there is nothing to relay on Windows.
            return
        if signum in TERMINAL_SIGNALS and self.in_terminal_foreground():
            logger.info("signal not relayed because the terminal sent it to the child too signal=%s", name)
            return
        try:
            os.kill(self._child_pid, signum)
        except ProcessLookupError:
            return
        logger.info("signal relayed signal=%s pid=%d", name, self._child_pid)


def end_with_signal(signum: int) -> None:
    """End this process with `signum`, the way the child ended, and without a core dump.

    A shell that runs a script waits for its foreground job after Ctrl-C, and stops the script
    only when the job died of SIGINT itself (bash's "wait and cooperative exit"). An exit status
    of 130 would let the script go on with its next command.
    """
    if os.name != "posix":
        return
    import resource

    # SIGQUIT would otherwise dump the core of keyside exec itself.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)


def _spawn(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    try:
        # On Linux the child gets SIGTERM if keyside exec dies without relaying one (SIGKILL).
        return subprocess.Popen(list(command), env=dict(env), preexec_fn=child_death_hook())
    except FileNotFoundError:
        raise ExecError(f"Command not found: {command[0]!r}.", reason=COMMAND_NOT_FOUND,
                        fix="Check the spelling, or give the full path of the program.",
                        exit_code=EXIT_COMMAND_NOT_FOUND) from None
    except OSError as error:
        raise ExecError(f"Cannot run {command[0]!r}: {error.strerror}.", reason=COMMAND_NOT_EXECUTABLE,
                        fix="Check that the file is a program and that you may execute it.",
                        exit_code=EXIT_COMMAND_NOT_EXECUTABLE) from None


def run_child(command: Sequence[str], env: Mapping[str, str], relay: SignalRelay) -> int:
    """Run `command` with exactly the variables `env` and return its exit code.

    A child killed by a signal gives EXIT_SIGNAL_BASE + the signal number. Raises ExecError,
    with exit code 127 or 126, when the command cannot be started.
    """
    terminal = open_controlling_terminal()
    try:
        relay.spawning()
        child = _spawn(command, env)
        logger.info("child started pid=%d program=%s terminal=%s", child.pid, os.path.basename(command[0]),
                    terminal is not None)
        relay.attach(child.pid, terminal)
        try:
            # A relayed signal interrupts the wait. Python runs the handler, then waits again (PEP 475).
            exit_code = child.wait()
        finally:
            relay.finish()
        if exit_code < 0 and -exit_code in TERMINAL_SIGNALS and relay.in_terminal_foreground():
            relay.terminal_signal = -exit_code
    finally:
        if terminal is not None:
            os.close(terminal)

    if exit_code < 0:
        logger.info("child killed pid=%d signal=%s", child.pid, signal.Signals(-exit_code).name)
        return EXIT_SIGNAL_BASE - exit_code
    logger.info("child exited pid=%d exit_code=%d", child.pid, exit_code)
    return exit_code

"""Run the command of `keyside exec` as a child process: signal relay and terminal hand-off.

The child runs in its own process group. When keyside exec is in the foreground of its
controlling terminal, it makes the child's group the terminal's foreground group, as a shell
does for a job. Ctrl-C, Ctrl-\\ and Ctrl-Z then reach the child and its descendants once,
straight from the terminal, and the child can read the terminal. Signals sent to keyside exec
itself (kill, a process supervisor, a CI runner that cancels a job) are relayed to the child's
process only, never to its process group, just as if the child had been signalled directly.
Without a separate process group, a terminal's Ctrl-C would reach the child twice: once from
the terminal and once relayed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from types import FrameType

from keyside.exec.environment import COMMAND_NOT_EXECUTABLE, COMMAND_NOT_FOUND, ExecError

logger = logging.getLogger(__name__)

# Signals that keyside exec passes on to the child instead of acting on them. SIGUSR1 and
# SIGUSR2 are relayed too, because their default action would end keyside exec and the sidecar
# with it while the child keeps running.
if os.name == "posix":
    RELAYED_SIGNALS: tuple[signal.Signals, ...] = (
        signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
    )
else:
    RELAYED_SIGNALS = (signal.SIGINT,)

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


class SignalRelay:
    """Handlers for RELAYED_SIGNALS whose action depends on how far the run has got.

    Before the child is spawned a signal raises Interrupted, so start-up stops and cleans up.
    While Popen runs, signals are queued, because an exception inside Popen could lose the pid
    of a child that already exists. Once the child runs they go to it, queued ones first. After
    the child has exited they are logged and ignored, so cleanup (revoking the token, stopping
    the sidecar) always completes. Python runs these handlers in the main thread only, so the
    relay must be installed from the main thread.
    """

    def __init__(self) -> None:
        self._phase = _STARTING
        self._child_pid: int | None = None
        self._pending: list[int] = []
        self._previous: dict[int, object] = {}

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

    def attach(self, pid: int) -> None:
        """Relay signals to `pid` from now on, starting with any queued while it was spawned."""
        self._child_pid = pid
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

    def _forward(self, signum: int) -> None:
        if self._child_pid is None:
            return
        if os.name != "posix":
            # NOTE: untested. A console Ctrl-C reaches every process on the console, the child
            # included, so there is nothing to relay on Windows.
            return
        try:
            os.kill(self._child_pid, signum)
        except ProcessLookupError:
            return
        logger.info("signal relayed signal=%s pid=%d", signal.Signals(signum).name, self._child_pid)


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


def _is_foreground(terminal: int, process_group: int) -> bool:
    try:
        return os.tcgetpgrp(terminal) == process_group
    except OSError:
        return False


def _set_foreground(terminal: int, process_group: int) -> None:
    # A process outside the foreground group gets SIGTTOU from tcsetpgrp unless it blocks it.
    # Blocking it in this thread only keeps the change away from children and other threads.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(terminal, process_group)
    except OSError as error:
        logger.warning("terminal hand-off failed process_group=%d error=%s", process_group, error)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _continue_group(process_group: int) -> None:
    try:
        os.killpg(process_group, signal.SIGCONT)
    except ProcessLookupError:
        return


def _spawn(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    try:
        if os.name == "posix":
            return subprocess.Popen(list(command), env=dict(env), process_group=0)
        return subprocess.Popen(list(command), env=dict(env))
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
        return _run_child(command, env, relay, terminal)
    finally:
        if terminal is not None:
            os.close(terminal)


def _run_child(command: Sequence[str], env: Mapping[str, str], relay: SignalRelay, terminal: int | None) -> int:
    relay.spawning()
    child = _spawn(command, env)
    in_foreground = terminal is not None and _is_foreground(terminal, os.getpgrp())
    logger.info("child started pid=%d program=%s terminal=%s foreground=%s", child.pid,
                os.path.basename(command[0]), terminal is not None, in_foreground)
    if terminal is not None and in_foreground:
        _set_foreground(terminal, child.pid)
    relay.attach(child.pid)

    try:
        if os.name == "posix":
            status = _wait_posix(child.pid, terminal)
            exit_code = os.waitstatus_to_exitcode(status)
            # Popen must not try to reap the pid again: it may belong to another process by now.
            child.returncode = exit_code
        else:
            exit_code = child.wait()
    finally:
        relay.finish()
        # Take the terminal back only from the child's group. After `bg`, the shell has it.
        if terminal is not None and _is_foreground(terminal, child.pid):
            _set_foreground(terminal, os.getpgrp())

    if exit_code < 0:
        logger.info("child killed pid=%d signal=%s", child.pid, signal.Signals(-exit_code).name)
        return EXIT_SIGNAL_BASE - exit_code
    logger.info("child exited pid=%d exit_code=%d", child.pid, exit_code)
    return exit_code


def _wait_posix(pid: int, terminal: int | None) -> int:
    """Wait until `pid` exits and return its wait status, following it through stops."""
    while True:
        # A relayed signal interrupts waitpid. Python runs the handler, then retries (PEP 475).
        _, status = os.waitpid(pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            return status
        _follow_stop(pid, terminal, os.WSTOPSIG(status))


def _follow_stop(pid: int, terminal: int | None, stop_signal: int) -> None:
    """React to the child being stopped, as a shell does for a job.

    The shell that started keyside exec knows only keyside exec, so keyside exec stops too and
    the shell reports a stopped job. The shell's `fg` or `bg` then continues keyside exec, which
    continues the child and, after `fg`, gives it the terminal.
    """
    if terminal is None:
        # Without a terminal there is no job control. The process that stopped the child must
        # continue it.
        return
    if stop_signal in (signal.SIGTTIN, signal.SIGTTOU) and _is_foreground(terminal, pid):
        # The child used the terminal in the instant between its start and the hand-off, and
        # it has the terminal now.
        _continue_group(pid)
        return

    # Ctrl-Z, or the child used the terminal from the background (`keyside exec ... &`).
    logger.info("child stopped pid=%d signal=%s", pid, signal.Signals(stop_signal).name)
    if _is_foreground(terminal, pid):
        _set_foreground(terminal, os.getpgrp())
    os.kill(os.getpid(), signal.SIGSTOP)

    in_foreground = _is_foreground(terminal, os.getpgrp())
    if in_foreground:
        _set_foreground(terminal, pid)
    _continue_group(pid)
    logger.info("child continued pid=%d foreground=%s", pid, in_foreground)

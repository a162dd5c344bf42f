"""The sidecar process: read the bootstrap, bind 127.0.0.1, prove the token, serve until stdin closes.

Lifetime rules: the sidecar lives exactly as long as its host. End of file on stdin (the host
exited or died) stops it within EXIT_DEADLINE_S; on Linux the parent-death signal is a second line
of defence for a host killed while another process keeps the pipe open.

Start-up order: everything up to the ready line uses the standard library and small keyside
modules only. aiohttp and the request pipeline, whose imports take most of the start-up time, load
after the ready line, while the host finishes its own start. Connections that arrive meanwhile
wait in the listen backlog, and control messages wait on the pipe, so nothing is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from keyside.errors import KeysideError
from keyside.redact import Redactor
from keyside.sidecar.channel import ControlChannel, claim_stdout
from keyside.sidecar.config import parse_bootstrap
from keyside.sidecar.keystore import leak_forms
from keyside.sidecar.lifetime import exit_after_deadline
from keyside.sidecar.logsetup import configure_early_logging, configure_logging
from keyside.sidecar.protocol import decode_message, handshake_proof

logger = logging.getLogger(__name__)

# The host writes the bootstrap right after spawning; a sidecar left waiting longer is orphaned.
BOOTSTRAP_TIMEOUT_S = 10.0
# In-flight requests get this long to finish during shutdown; it fits inside EXIT_DEADLINE_S.
SHUTDOWN_GRACE_S = 0.3
LISTEN_BACKLOG = 128

EXIT_OK = 0
EXIT_BAD_BOOTSTRAP = 2
EXIT_BIND_FAILED = 3


def bind_listener(preferred_port: int) -> socket.socket:
    """Bind 127.0.0.1 on `preferred_port`, or on a port the OS assigns when it is 0 or taken."""
    if preferred_port:
        try:
            return _bind(preferred_port)
        except OSError as error:
            logger.info("preferred port unavailable port=%d error=%s; using an OS-assigned port",
                        preferred_port, error.strerror)
    return _bind(0)


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if sys.platform == "win32":
            # On Windows, SO_REUSEADDR would let another process bind the same port; this forbids it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            # Lets a restarted sidecar reuse its port while old connections sit in TIME_WAIT. Unlike
            # SO_REUSEPORT, it never lets a second socket listen on a port in use.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def run(channel: ControlChannel, redactor: Redactor) -> int:
    """Serve one sidecar session; return the process exit code."""
    # 1. Bootstrap: the first line, within BOOTSTRAP_TIMEOUT_S.
    try:
        line = await asyncio.wait_for(channel.next_line(), BOOTSTRAP_TIMEOUT_S)
    except TimeoutError:
        channel.send({"type": "fatal", "reason": "bootstrap_timeout",
                      "message": f"No bootstrap message within {BOOTSTRAP_TIMEOUT_S:g} s."})
        return EXIT_BAD_BOOTSTRAP
    if not isinstance(line, bytes):
        logger.warning("stdin closed before the bootstrap")
        return EXIT_BAD_BOOTSTRAP
    try:
        config = parse_bootstrap(decode_message(line))
    except ValueError:
        channel.send({"type": "fatal", "reason": "invalid_bootstrap",
                      "message": "The bootstrap is not a JSON object with a string `type`."})
        return EXIT_BAD_BOOTSTRAP
    except KeysideError as error:
        channel.send({"type": "fatal", "reason": error.reason, "message": redactor.redact(error.message)})
        return EXIT_BAD_BOOTSTRAP

    # 2. Logging. The token and every secret go into the redactor before the first log line.
    redactor.add(config.token)
    for value in config.secrets.values():
        for form in leak_forms(value):
            redactor.add(form)
    log_file = configure_logging(redactor, config.log_level, config.log_dir)

    # 3. Listen on loopback and prove the token to the host.
    try:
        sock = bind_listener(config.preferred_port)
    except OSError as error:
        channel.send({"type": "fatal", "reason": "bind_failed",
                      "message": f"Cannot listen on 127.0.0.1: {error.strerror}."})
        return EXIT_BIND_FAILED
    port = sock.getsockname()[1]
    channel.send({"type": "ready", "port": port, "pid": os.getpid(),
                  "proof": handshake_proof(config.token, config.nonce, port)})

    # 4. Load the HTTP stack (see the module docstring for why only now) and start serving.
    from aiohttp import web

    from keyside.sidecar.app import Sidecar
    from keyside.sidecar.control import ControlDispatcher

    sidecar = Sidecar(config, redactor)
    sidecar.set_port(port)
    server = web.Server(sidecar.handle, handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    logger.info("sidecar ready port=%d services=%s origins=%s log_file=%s", port,
                ",".join(sorted(config.services)) or "-", ",".join(sorted(config.origins)) or "-", log_file)

    # 5. Serve until stdin closes or a signal arrives, then stop within the deadline.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signal_number, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # Windows: stdin end of file is the stop signal
    control_task = asyncio.create_task(ControlDispatcher(sidecar, channel).run())
    control_task.add_done_callback(lambda _task: stop.set())
    await stop.wait()

    exit_after_deadline(EXIT_OK)
    logger.info("sidecar stopping port=%d", port)
    control_task.cancel()
    await runner.cleanup()
    await sidecar.close()
    logger.info("sidecar stopped port=%d", port)
    return EXIT_OK


def main(parent_death_signal_error: str | None = None) -> int:
    """Run the sidecar process and end it with its exit code; this never returns.

    The caller arms the parent-death signal first (see `__main__`) and passes the error text of
    that call, if any, to be logged.
    """
    os.umask(0o077)  # the log files are the only files the sidecar writes
    protocol_out = claim_stdout()
    redactor = Redactor()
    configure_early_logging(redactor)
    if parent_death_signal_error:
        logger.warning("parent-death signal not set, relying on stdin end of file: %s", parent_death_signal_error)

    async def session() -> int:
        channel = ControlChannel(asyncio.get_running_loop(), sys.stdin.buffer, protocol_out)
        channel.start()
        return await run(channel, redactor)

    try:
        code = asyncio.run(session())
    except KeyboardInterrupt:
        code = EXIT_OK
    logging.shutdown()
    sys.stderr.flush()
    # The stdin reader thread may still be blocked in a read and own the stdin buffer's lock. A
    # normal interpreter shutdown would then abort, so the process ends here.
    os._exit(code)

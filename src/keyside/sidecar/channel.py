"""The sidecar's end of the host pipe: JSON lines in on stdin, JSON lines out on stdout.

A thread reads stdin, so the same code works where asyncio cannot watch a pipe (Windows). End of
file means the host exited or died; the reader reports it as None and the sidecar shuts down.
Stdout is reserved for protocol messages: file descriptor 1 is pointed at stderr once the channel
has its own copy, so a stray print can never corrupt or forge a reply.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any, BinaryIO

from keyside.sidecar.protocol import MAX_LINE_BYTES, encode_message


class LineTooLong:
    """Marks a stdin line longer than MAX_LINE_BYTES; its bytes were discarded."""


LINE_TOO_LONG = LineTooLong()
ChannelItem = bytes | LineTooLong | None


def claim_stdout() -> BinaryIO:
    """Return a private handle on the protocol stdout and send fd 1 (and sys.stdout) to stderr."""
    protocol_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=0)


class ControlChannel:
    """Reads control lines on a thread and writes protocol messages."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stdin: BinaryIO, stdout: BinaryIO):
        self._loop = loop
        self._stdin = stdin
        self._stdout = stdout
        self._lines: asyncio.Queue[ChannelItem] = asyncio.Queue()
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._read_lines, name="sidecar-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def next_line(self) -> ChannelItem:
        """Return the next line, LINE_TOO_LONG, or None at end of file."""
        return await self._lines.get()

    def send(self, message: dict[str, Any]) -> None:
        """Write one protocol message; a closed pipe is ignored because the host is gone."""
        data = encode_message(message)
        with self._write_lock:
            try:
                self._stdout.write(data)
                self._stdout.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass

    def _put(self, item: ChannelItem) -> None:
        try:
            self._loop.call_soon_threadsafe(self._lines.put_nowait, item)
        except RuntimeError:
            pass  # the event loop is closed: the sidecar is exiting anyway

    def _read_lines(self) -> None:
        try:
            while True:
                line = self._stdin.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    self._discard_rest_of_line()
                    self._put(LINE_TOO_LONG)
                    continue
                self._put(line)
        except (OSError, ValueError):
            pass
        finally:
            self._put(None)

    def _discard_rest_of_line(self) -> None:
        while True:
            more = self._stdin.readline(MAX_LINE_BYTES + 1)
            if not more or more.endswith(b"\n"):
                return

"""The control channel to a running sidecar: requests on its stdin, replies matched by id on stdout.

Only the reader task reads stdout after the handshake. Each request gets a fresh integer id and
waits for the reply with that id. When stdout closes, every waiting request fails at once with
`sidecar_unavailable` instead of running into its timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from keyside.errors import KeysideError
from keyside.sidecar.protocol import decode_message, encode_message

log = logging.getLogger(__name__)


class SidecarError(KeysideError):
    """The sidecar could not be started, stopped responding, or rejected a control request."""

    reason = "sidecar_unavailable"


class ControlChannel:
    def __init__(self, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader, pid: int):
        self._stdin = stdin
        self._stdout = stdout
        self._pid = pid
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_replies(), name=f"sidecar-{self._pid}-replies")

    async def request(self, message_type: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply; raise SidecarError on failure, timeout or ok=false.

        A rejected request raises with the sidecar's own reason, such as `unknown_service`.
        """
        if self._closed:
            raise SidecarError("The sidecar's control channel is closed.", fix="wait for the restart")
        request_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        try:
            async with self._write_lock:
                self._stdin.write(encode_message({"type": message_type, "id": request_id, **fields}))
                await self._stdin.drain()
            message = await asyncio.wait_for(reply, timeout_s)
        except (ConnectionError, BrokenPipeError):
            raise SidecarError(f"The sidecar closed its control channel during {message_type}.",
                               fix="wait for the restart") from None
        except TimeoutError:
            log.warning("control request timed out type=%s id=%d pid=%d timeout_s=%.1f",
                        message_type, request_id, self._pid, timeout_s)
            raise SidecarError(f"The sidecar did not reply to {message_type} within {timeout_s:.1f} s.",
                               reason="sidecar_timeout", fix="check the sidecar log") from None
        finally:
            self._pending.pop(request_id, None)

        if not message.get("ok"):
            reason = message.get("reason") if isinstance(message.get("reason"), str) else "sidecar_rejected"
            text = message.get("message") if isinstance(message.get("message"), str) else "request rejected"
            raise SidecarError(f"The sidecar rejected {message_type}: {text}", reason=reason)
        return message

    async def _read_replies(self) -> None:
        try:
            while True:
                line = await self._stdout.readline()
                if not line:
                    break
                try:
                    message = decode_message(line)
                except ValueError:
                    log.warning("ignored a malformed line from the sidecar pid=%d bytes=%d", self._pid, len(line))
                    continue
                request_id = message.get("id")
                waiter = self._pending.get(request_id) if message.get("type") == "reply" else None
                if waiter is None or waiter.done():
                    log.info("ignored a sidecar message type=%s id=%r pid=%d",
                             str(message.get("type"))[:32], request_id, self._pid)
                    continue
                waiter.set_result(message)
        except (ValueError, ConnectionError) as error:
            # ValueError: a line longer than the reader's limit.
            log.warning("stopped reading the sidecar's stdout pid=%d error=%s", self._pid, type(error).__name__)
        finally:
            self._fail_pending()

    def _fail_pending(self) -> None:
        self._closed = True
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(SidecarError("The sidecar exited before it replied.",
                                                  fix="wait for the restart"))

    async def close(self) -> None:
        """Close stdin, which makes the sidecar exit, and stop reading replies."""
        self._closed = True
        if not self._stdin.is_closing():
            self._stdin.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        self._fail_pending()

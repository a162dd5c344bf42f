"""Handling of the host's control requests: secrets, tokens, origins, validation and ping.

Each request has an integer `id` and gets exactly one reply with that id. Validation probes run
as tasks, so a slow upstream does not hold up other requests; their replies may come out of order.
No reply carries a secret value or a token, and no error message repeats one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from keyside.errors import KeysideError
from keyside.manifest import SECRET_NAME_PATTERN
from keyside.sidecar.app import Sidecar
from keyside.sidecar.channel import LINE_TOO_LONG, ControlChannel
from keyside.sidecar.config import (
    MAX_ORIGINS,
    TOKEN_ID_PATTERN,
    BootstrapError,
    check_secret_value,
    check_token,
    normalise_origin,
)
from keyside.sidecar.keystore import leak_forms
from keyside.sidecar.protocol import MAX_LINE_BYTES, decode_message
from keyside.sidecar.tokens import TokenConflict
from keyside.sidecar.validation import validate_key

logger = logging.getLogger(__name__)


class ControlError(KeysideError):
    """A control request that cannot be carried out."""

    reason = "invalid_message"


def _field(message: dict[str, Any], name: str, kind: type) -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ControlError(f"Field {name!r} of {message.get('type')!r} is missing or not a {kind.__name__}.")
    return value


class ControlDispatcher:
    """Reads control requests from the channel until end of file and replies to each one."""

    def __init__(self, sidecar: Sidecar, channel: ControlChannel):
        self.sidecar = sidecar
        self.channel = channel
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "set_secret": self._set_secret,
            "delete_secret": self._delete_secret,
            "rotate_token": self._rotate_token,
            "add_token": self._add_token,
            "revoke_token": self._revoke_token,
            "set_origins": self._set_origins,
            "ping": self._ping,
        }

    async def run(self) -> None:
        """Reply to requests until stdin closes."""
        while True:
            line = await self.channel.next_line()
            if line is None:
                logger.info("control channel closed")
                return
            if line is LINE_TOO_LONG:
                self._reply_error(None, ControlError(f"Control message longer than {MAX_LINE_BYTES} bytes."))
                continue
            assert isinstance(line, bytes)  # noqa: S101 - the only other item type
            self._dispatch(line)

    def _dispatch(self, line: bytes) -> None:
        try:
            message = decode_message(line)
        except ValueError:
            self._reply_error(None, ControlError("Control message is not a JSON object with a string `type`."))
            return
        request_id = message.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            self._reply_error(None, ControlError("Control message has no integer `id`."))
            return
        kind = message["type"]
        if kind == "validate":
            task = asyncio.create_task(self._validate(request_id, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        handler = self._handlers.get(kind)
        try:
            if kind == "bootstrap":
                raise ControlError("The bootstrap was already received.", reason="already_bootstrapped")
            if handler is None:
                raise ControlError(f"Unknown control message type {kind[:40]!r}.", reason="unknown_message")
            result = handler(message)
        except KeysideError as error:
            self._reply_error(request_id, error)
            return
        self.channel.send({"type": "reply", "id": request_id, "ok": True, **result})

    def _reply_error(self, request_id: int | None, error: KeysideError) -> None:
        logger.warning("control request failed id=%s reason=%s", request_id, error.reason)
        self.channel.send({"type": "reply", "id": request_id, "ok": False, "reason": error.reason,
                           "message": self.sidecar.redactor.redact(error.message)})

    # ---- requests -------------------------------------------------------------------------

    def _set_secret(self, message: dict[str, Any]) -> dict[str, Any]:
        name, value = check_secret_value(message.get("name"), message.get("value"))
        self.sidecar.keys.set(name, value)
        logger.info("secret set name=%s", name)
        return {"name": name}

    def _delete_secret(self, message: dict[str, Any]) -> dict[str, Any]:
        name = _field(message, "name", str)
        if not SECRET_NAME_PATTERN.match(name):
            raise BootstrapError(f"Secret name {name[:80]!r} is invalid.", reason="invalid_secret_name")
        deleted = self.sidecar.keys.delete(name)
        logger.info("secret deleted name=%s existed=%s", name, deleted)
        return {"name": name, "deleted": deleted}

    def _rotate_token(self, message: dict[str, Any]) -> dict[str, Any]:
        token = check_token(message.get("token"), reason="invalid_token")
        self.sidecar.redactor.add(token)
        try:
            self.sidecar.tokens.set_ui_token(token)
        except TokenConflict as error:
            raise ControlError(str(error), reason="token_conflict") from None
        self.sidecar.keys.invalidate()
        logger.info("ui token rotated")
        return {}

    def _add_token(self, message: dict[str, Any]) -> dict[str, Any]:
        token_id = _field(message, "token_id", str)
        if not TOKEN_ID_PATTERN.match(token_id):
            raise ControlError(f"Token id {token_id[:80]!r} is invalid.", fix="use letters, digits, '.', '_', '-'")
        token = check_token(message.get("token"), reason="invalid_token")
        self.sidecar.redactor.add(token)
        services = _field(message, "services", list)
        unknown = [name for name in services if not isinstance(name, str) or name not in self.sidecar.services]
        if not services or unknown:
            raise ControlError(f"Exec token {token_id!r} must list known services; unknown: {unknown[:10]!r}.",
                               reason="unknown_service")
        try:
            self.sidecar.tokens.add_exec_token(token_id, token, frozenset(services))
        except TokenConflict as error:
            raise ControlError(str(error), reason="token_conflict") from None
        self.sidecar.keys.invalidate()
        logger.info("exec token added token_id=%s services=%s", token_id, ",".join(sorted(services)))
        return {"token_id": token_id}

    def _revoke_token(self, message: dict[str, Any]) -> dict[str, Any]:
        token_id = _field(message, "token_id", str)
        revoked = self.sidecar.tokens.revoke_exec_token(token_id)
        self.sidecar.keys.invalidate()
        logger.info("exec token revoked token_id=%s existed=%s", token_id[:64], revoked)
        return {"token_id": token_id, "revoked": revoked}

    def _set_origins(self, message: dict[str, Any]) -> dict[str, Any]:
        origins = _field(message, "origins", list)
        if len(origins) > MAX_ORIGINS:
            raise ControlError(f"At most {MAX_ORIGINS} origins are allowed.")
        normalised = frozenset(normalise_origin(origin) for origin in origins)
        self.sidecar.cors.origins = normalised
        logger.info("page origins set origins=%s", ",".join(sorted(normalised)))
        return {"origins": sorted(normalised)}

    def _ping(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"uptime_s": self.sidecar.traffic.uptime_s}

    async def _validate(self, request_id: int, message: dict[str, Any]) -> None:
        value = message.get("value")
        if isinstance(value, str):
            # Mask the candidate in logs before anything can mention it, even if it is never stored.
            for form in leak_forms(value):
                self.sidecar.redactor.add(form)
        try:
            name = _field(message, "service", str)
            service = self.sidecar.services.get(name)
            if service is None:
                raise ControlError(f"No service is named {name[:64]!r}.", reason="unknown_service")
            result = await validate_key(service, value, self.sidecar.clients)
        except KeysideError as error:
            self._reply_error(request_id, error)
            return
        self.channel.send({"type": "reply", "id": request_id, "ok": True, **result.to_dict()})

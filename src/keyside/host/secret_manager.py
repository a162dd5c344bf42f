"""Secret changes from the UI: vault first, then the sidecar; and validation through the sidecar.

A change is written to the vault (which persists before it updates its cache) and only then
pushed to the sidecar, so a failed write leaves the cache and the sidecar as they were. Changes
run one at a time, so the sidecar gets them in the vault's order. A sidecar that is not running
at that moment reads the vault when it starts, and a sidecar that started while a change was in
flight is brought up to date before it is marked ready (`resync`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from keyside.errors import KeysideError
from keyside.host.channel import SidecarError
from keyside.host.ipc import IpcError
from keyside.host.supervisor import Supervisor
from keyside.manifest import Manifest, ServiceSpec
from keyside.redact import Redactor
from keyside.vault.errors import SECRET_BINDING_MISMATCH

log = logging.getLogger(__name__)

# Twice the sidecar's own probe deadline (keyside.sidecar.validation.VALIDATION_TIMEOUT_S, 15 s),
# so its reply, even `unreachable`, arrives before the host gives up.
VALIDATE_TIMEOUT_S = 30.0

VALIDATION_RESULTS = ("valid", "invalid", "unreachable")
# Validations remembered per secret: the stored key plus a few candidates tried before saving.
MAX_VALIDATIONS_PER_SECRET = 4


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _clean_value(name: str, value: str, *, fix_if_empty: str) -> str:
    """Return a pasted key without surrounding whitespace, or raise IpcError when it is empty.

    A control character inside the key also raises, because it would split the HTTP header,
    query or path the key is sent in.
    """
    clean = value.strip()
    if not clean:
        raise IpcError(f"The value for {name} is empty.", reason="invalid_arguments", fix=fix_if_empty)
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in clean):
        raise IpcError(f"The value for {name} contains a line break or another control character.",
                       reason="invalid_arguments", fix="paste the key on one line, without tabs or line breaks")
    return clean


def _as_ipc_error(error: KeysideError) -> IpcError:
    return IpcError(error.message, reason=error.reason, fix=error.fix)


class SecretManager:
    """Lists, sets, deletes and validates the app's secrets on behalf of UI commands."""

    def __init__(self, manifest: Manifest, vault: Any, supervisor: Supervisor, redactor: Redactor):
        self._manifest = manifest
        self._vault = vault
        self._supervisor = supervisor
        self._redactor = redactor
        self._lock: asyncio.Lock | None = None
        # Recent validations per secret, keyed by an HMAC of the value they were about. A result
        # is shown only while that value is the stored one, and checking a wrong candidate does
        # not hide the result of the stored key. The HMAC key never leaves memory.
        self._fingerprint_key = os.urandom(32)
        self._validations: dict[str, OrderedDict[bytes, dict[str, Any]]] = {}

    def _changes(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _fingerprint(self, value: str) -> bytes:
        return hmac.new(self._fingerprint_key, value.encode("utf-8"), hashlib.sha256).digest()

    def last_validation(self, name: str) -> dict[str, Any] | None:
        """Return the last validation of the stored value of `name`, or None."""
        stored = self._vault.get(name)
        if not stored:
            return None
        result = self._validations.get(name, OrderedDict()).get(self._fingerprint(stored))
        return dict(result) if result is not None else None

    def listing(self) -> list[dict[str, Any]]:
        """Return one row per declared secret: name, description, configured and last validation.

        The row of a stored key that is withheld, because it was saved for other upstream origins
        than this manifest's services use, also has binding="mismatch", `recorded_origins` and
        `current_origins`. Its `configured` is False.
        """
        problems = self._vault.binding_problems()
        rows = []
        for spec in self._manifest.secrets.values():
            configured = bool(self._vault.is_configured(spec.name))
            row: dict[str, Any] = {
                "name": spec.name,
                "description": spec.description,
                "configured": configured,
                "last_validation": self.last_validation(spec.name),
            }
            if spec.name in problems:
                recorded, current = problems[spec.name]
                row.update(binding="mismatch", recorded_origins=list(recorded), current_origins=list(current))
            rows.append(row)
        return rows

    async def set(self, name: str, value: str) -> dict[str, Any]:
        value = _clean_value(name, value, fix_if_empty="paste the key, or call delete_secret to remove it")
        async with self._changes():
            try:
                await asyncio.to_thread(self._vault.set, name, value)
            except KeysideError as error:
                log.warning("secret not saved name=%s reason=%s", name, error.reason)
                raise _as_ipc_error(error) from None
            stored = self._vault.get(name) or value
            self._redactor.add(stored)
            sidecar = await self._push("set_secret", name=name, value=stored)
        log.info("secret saved name=%s sidecar=%s", name, sidecar)
        return {"name": name, "configured": True, "sidecar": sidecar}

    async def delete(self, name: str) -> dict[str, Any]:
        async with self._changes():
            try:
                existed = bool(await asyncio.to_thread(self._vault.delete, name))
            except KeysideError as error:
                log.warning("secret not deleted name=%s reason=%s", name, error.reason)
                raise _as_ipc_error(error) from None
            self._validations.pop(name, None)
            sidecar = await self._push("delete_secret", name=name) if existed else "unchanged"
        log.info("secret deleted name=%s existed=%s sidecar=%s", name, existed, sidecar)
        return {"name": name, "deleted": existed, "sidecar": sidecar}

    async def _push(self, message_type: str, **fields: Any) -> str:
        """Send one change to the sidecar; return "updated", "pending" (none running) or "restarting"."""
        try:
            await self._supervisor.request(message_type, **fields)
        except SidecarError as error:
            if self._supervisor.state["state"] != "ready":
                # The next sidecar reads the vault at its start.
                return "pending"
            # The running sidecar may hold the old value; a fresh one reads the vault.
            log.warning("secret change not applied by the sidecar type=%s name=%s reason=%s; restarting it",
                        message_type, fields.get("name"), error.reason)
            await self._supervisor.restart("secret_push_failed")
            return "restarting"
        return "updated"

    async def resync(self, bootstrap_secrets: dict[str, str]) -> None:
        """Push every change made after `bootstrap_secrets` was read for the sidecar starting now."""
        current = self._vault.snapshot()
        for name, value in current.items():
            if bootstrap_secrets.get(name) != value:
                await self._supervisor.request("set_secret", name=name, value=value)
        for name in bootstrap_secrets:
            if name not in current:
                await self._supervisor.request("delete_secret", name=name)

    def _validation_service(self, name: str) -> ServiceSpec:
        services = [s for s in self._manifest.services.values() if s.secret == name]
        with_probe = [s for s in services if s.validate is not None]
        if not with_probe:
            raise IpcError(f"No service that uses {name} declares a validation request.",
                           reason="validation_not_configured",
                           fix=f"add a validate table to a service with secret = {name!r} in keyside.toml")
        return with_probe[0]

    async def validate(self, name: str, value: str | None) -> dict[str, Any]:
        """Check a candidate value (or the stored one when `value` is None) through the sidecar.

        Returns {"result": "valid" | "invalid" | "unreachable", "reason", "status", "service"};
        the value is never stored by this call.
        """
        if value is not None:
            value = _clean_value(name, value,
                                 fix_if_empty="paste the key to check, or leave value out to check the stored one")
        candidate = value if value is not None else self._vault.get(name)
        if not candidate and name in self._vault.binding_problems():
            raise IpcError(f"The stored {name} was saved for other upstream origins, so it is withheld.",
                           reason=SECRET_BINDING_MISMATCH,
                           fix=f"save a new key for this app, or run `keyside secrets bind {name}`")
        if not candidate:
            raise IpcError(f"{name} has no stored value to validate.", reason="secret_not_configured",
                           fix="pass a candidate value, or save one first")
        service = self._validation_service(name)

        try:
            reply = await self._supervisor.request("validate", timeout_s=VALIDATE_TIMEOUT_S,
                                                   service=service.name, value=candidate)
        except SidecarError as error:
            raise _as_ipc_error(error) from None
        result = reply.get("result")
        if result not in VALIDATION_RESULTS:
            raise IpcError("The sidecar sent a validation reply without a known result.",
                           reason="sidecar_invalid_reply", fix="run a matching keyside sidecar")
        reason = reply.get("reason") if isinstance(reply.get("reason"), str) else None
        status = reply.get("status") if isinstance(reply.get("status"), int) else None

        recent = self._validations.setdefault(name, OrderedDict())
        fingerprint = self._fingerprint(candidate)
        recent.pop(fingerprint, None)
        recent[fingerprint] = {"result": result, "reason": reason, "at": _now()}
        while len(recent) > MAX_VALIDATIONS_PER_SECRET:
            recent.popitem(last=False)
        log.info("secret validated name=%s service=%s result=%s reason=%s status=%s",
                 name, service.name, result, reason, status)
        return {"result": result, "reason": reason, "status": status, "service": service.name}

"""Vault: the host's thread-safe, in-memory cache of one app's secrets over one store.

Secrets load once. A change is persisted first and reaches the cache only when the store
reports success, so a failed write never leaves the host using a value that is not saved.
Only names declared in the app manifest can be read or written.
"""

from __future__ import annotations

import logging
import threading

from keyside.manifest import SECRET_NAME_PATTERN, Manifest
from keyside.vault.errors import INVALID_SECRET_VALUE, UNKNOWN_SECRET, VaultError
from keyside.vault.store import Entries, SecretStore

log = logging.getLogger(__name__)

# No API key, bearer token or JWT we know of is near this size, and all of an app's secrets
# share one keyring entry, which some OS vaults cap at a few kilobytes.
MAX_SECRET_VALUE_CHARS = 16 * 1024
# An undeclared name comes from the caller and may be anything, even a pasted key, so error
# messages quote only its start. Declared names are at most 64 characters.
MAX_NAME_IN_MESSAGE_CHARS = 64


def normalize_value(name: str, value: object) -> str:
    """Return `value` trimmed of surrounding whitespace, or raise VaultError(invalid_secret_value).

    Control characters are rejected because a key is sent in an HTTP header, query or path,
    where a line break would split the request. The message never quotes the value.
    """
    if not isinstance(value, str):
        raise VaultError(f"The value for {name} must be text, not {type(value).__name__}.",
                         reason=INVALID_SECRET_VALUE, fix="Pass the key as a string.")
    clean = value.strip()
    if len(clean) > MAX_SECRET_VALUE_CHARS:
        raise VaultError(f"The value for {name} is longer than {MAX_SECRET_VALUE_CHARS} characters.",
                         reason=INVALID_SECRET_VALUE, fix="Check that you pasted only the key.")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in clean):
        raise VaultError(f"The value for {name} contains a line break or another control character.",
                         reason=INVALID_SECRET_VALUE,
                         fix="Paste the key on one line, without tabs or line breaks inside it.")
    return clean


class Vault:
    """A thread-safe cache of an app's secrets over one store (system keyring, file or memory).

    `get` and `snapshot` are for the host process only: no UI command may return their result.
    """

    def __init__(self, manifest: Manifest, store: SecretStore):
        self.manifest = manifest
        self._store = store
        self._lock = threading.RLock()
        self._cache: Entries | None = None

    @property
    def kind(self) -> str:
        return self._store.kind

    @property
    def backend_name(self) -> str:
        return self._store.backend_name

    def load(self) -> None:
        """Load the stored secrets once; later calls do nothing. Runs the store's migration."""
        with self._lock:
            if self._cache is None:
                self._cache = self._store.load()
                log.info("vault loaded app=%s backend=%r configured=%d", self.manifest.app_id,
                         self.backend_name, len(self._declared(self._cache)))

    def names(self) -> list[str]:
        """Return the declared secret names that have a value, sorted."""
        return sorted(self._declared(self._entries()))

    def is_configured(self, name: str) -> bool:
        self._require_declared(name)
        return name in self._entries()

    def get(self, name: str) -> str | None:
        """Return the value of a declared secret, or None when it is not set. Host use only."""
        self._require_declared(name)
        return self._entries().get(name)

    def snapshot(self) -> dict[str, str]:
        """Return a copy of every declared secret's value, for the sidecar bootstrap."""
        return self._declared(self._entries())

    def set(self, name: str, value: str) -> None:
        """Store `value`, trimmed, under a declared name. An empty value deletes the secret."""
        self._require_declared(name)
        clean = normalize_value(name, value)
        if not clean:
            self.delete(name)
            return

        def put(current: Entries) -> Entries:
            current[name] = clean
            return current

        with self._lock:
            self.load()
            self._cache = self._store.update(put)
        log.info("secret stored app=%s name=%s backend=%r", self.manifest.app_id, name, self.backend_name)

    def delete(self, name: str) -> bool:
        """Delete a declared secret and return True when it was stored."""
        self._require_declared(name)
        existed = False

        def remove(current: Entries) -> Entries:
            nonlocal existed
            existed = current.pop(name, None) is not None
            return current

        with self._lock:
            self.load()
            self._cache = self._store.update(remove)
        log.info("secret deleted app=%s name=%s existed=%s backend=%r", self.manifest.app_id, name,
                 existed, self.backend_name)
        return existed

    def _entries(self) -> Entries:
        with self._lock:
            self.load()
            assert self._cache is not None
            return self._cache

    def _declared(self, entries: Entries) -> dict[str, str]:
        # Stored entries for names the manifest no longer declares are kept, so a manifest that
        # declares them again finds them, but the host never returns them.
        return {name: value for name, value in entries.items() if name in self.manifest.secrets}

    def _require_declared(self, name: str) -> None:
        if not isinstance(name, str) or name not in self.manifest.secrets:
            raise unknown_secret_error(self.manifest, name)


def unknown_secret_error(manifest: Manifest, name: object) -> VaultError:
    """Build the error for a name that is not declared in `manifest`."""
    allowed = ", ".join(sorted(manifest.secrets)) or "(none)"
    if not isinstance(name, str):
        return VaultError(f"A secret name must be text, not {type(name).__name__}.", reason=UNKNOWN_SECRET,
                          fix=f"Use one of: {allowed}.")
    fix = f"Use one of: {allowed}"
    if SECRET_NAME_PATTERN.match(name):
        fix += f", or add [secrets.{name}] to {manifest.path}"
    return VaultError(f"Secret name {name[:MAX_NAME_IN_MESSAGE_CHARS]!r} is not declared in {manifest.path}.",
                      reason=UNKNOWN_SECRET, fix=fix + ".")

"""Vault: the host's thread-safe, in-memory cache of one app's secrets over one store.

Secrets load once. A change is persisted first and reaches the cache only when the store
reports success, so a failed write never leaves the host using a value that is not saved.
Only names declared in the app manifest can be read or written.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from keyside.manifest import SECRET_NAME_PATTERN, Manifest
from keyside.vault.binding import Origins, is_covered, manifest_origins, read_bindings, write_bindings
from keyside.vault.errors import INVALID_SECRET_VALUE, SECRET_NOT_STORED, UNKNOWN_SECRET, VaultError
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
    A stored value whose recorded origins do not cover every upstream origin the manifest would
    send it to is withheld: `get`, `snapshot`, `names` and `is_configured` treat it as unset, and
    `binding_problems` lists it.
    """

    def __init__(self, manifest: Manifest, store: SecretStore):
        self.manifest = manifest
        self._store = store
        self._lock = threading.RLock()
        self._cache: Entries | None = None
        self._origins: dict[str, Origins] = {name: manifest_origins(manifest, name) for name in manifest.secrets}

    @property
    def kind(self) -> str:
        return self._store.kind

    @property
    def backend_name(self) -> str:
        return self._store.backend_name

    @property
    def file_path(self) -> Path | None:
        """The encrypted file behind a `file` vault; None for the other kinds."""
        path = getattr(self._store, "path", None)
        return Path(path) if path is not None else None

    def load(self) -> None:
        """Load the stored secrets once; later calls do nothing. Runs the store's migration.

        A stored value of a declared secret that has no recorded origins (an entry written before
        keyside recorded them) is bound to the current manifest's origins (trust on first use).
        """
        with self._lock:
            if self._cache is None:
                self._cache = self._bind_on_first_use(self._store.load())
                problems = self.binding_problems()
                log.info("vault loaded app=%s backend=%r configured=%d withheld=%d", self.manifest.app_id,
                         self.backend_name, len(self._usable(self._cache)), len(problems))
                for name, (recorded, current) in sorted(problems.items()):
                    log.warning("secret withheld app=%s name=%s recorded_origins=%s current_origins=%s",
                                self.manifest.app_id, name, ",".join(recorded), ",".join(current))

    def names(self) -> list[str]:
        """Return the declared secret names that have a usable value, sorted."""
        return sorted(self._usable(self._entries()))

    def is_configured(self, name: str) -> bool:
        """Return whether `name` has a value that is bound to the manifest's origins."""
        self._require_declared(name)
        return name in self._usable(self._entries())

    def is_stored(self, name: str) -> bool:
        """Return whether `name` has a stored value, usable or withheld."""
        self._require_declared(name)
        return name in self._entries()

    def current_origins(self, name: str) -> Origins:
        """Return the upstream origins the current manifest would send `name` to."""
        self._require_declared(name)
        return self._origins[name]

    def recorded_origins(self, name: str) -> Origins | None:
        """Return the origins the stored value of `name` is bound to, or None when it is not stored."""
        self._require_declared(name)
        entries = self._entries()
        if name not in entries:
            return None
        return read_bindings(entries).get(name, ())

    def binding_problems(self) -> dict[str, tuple[Origins, Origins]]:
        """Return {name: (recorded origins, current origins)} for each withheld stored value."""
        entries = self._entries()
        bindings = read_bindings(entries)
        problems = {}
        for name in self.manifest.secrets:
            if name not in entries:
                continue
            recorded = bindings.get(name, ())
            if not is_covered(recorded, self._origins[name]):
                problems[name] = (recorded, self._origins[name])
        return problems

    def get(self, name: str) -> str | None:
        """Return the value of a declared secret, or None when it is not set or withheld. Host use only."""
        self._require_declared(name)
        return self._usable(self._entries()).get(name)

    def snapshot(self) -> dict[str, str]:
        """Return a copy of every usable declared secret's value, for the sidecar bootstrap."""
        return self._usable(self._entries())

    def set(self, name: str, value: str) -> None:
        """Store `value`, trimmed, under a declared name, bound to the manifest's current origins.

        An empty value deletes the secret.
        """
        self._require_declared(name)
        clean = normalize_value(name, value)
        if not clean:
            self.delete(name)
            return
        origins = self._origins[name]

        def put(current: Entries) -> Entries:
            bindings = read_bindings(current)
            current[name] = clean
            bindings[name] = origins
            return write_bindings(current, bindings)

        with self._lock:
            self.load()
            self._cache = self._store.update(put)
        log.info("secret stored app=%s name=%s origins=%s backend=%r", self.manifest.app_id, name,
                 ",".join(origins), self.backend_name)

    def bind(self, name: str) -> Origins:
        """Bind the stored value of `name` to the manifest's current origins; return the old origins.

        Raises VaultError(secret_not_stored) when `name` has no stored value.
        """
        self._require_declared(name)
        origins = self._origins[name]
        previous: Origins = ()

        def rebind(current: Entries) -> Entries:
            nonlocal previous
            if name not in current:
                raise VaultError(f"{name} has no stored value to bind.", reason=SECRET_NOT_STORED,
                                 fix=f"Store one with `keyside secrets set {name}`.")
            bindings = read_bindings(current)
            previous = bindings.get(name, ())
            bindings[name] = origins
            return write_bindings(current, bindings)

        with self._lock:
            self.load()
            self._cache = self._store.update(rebind)
        log.warning("secret bound app=%s name=%s previous_origins=%s origins=%s backend=%r", self.manifest.app_id,
                    name, ",".join(previous), ",".join(origins), self.backend_name)
        return previous

    def delete(self, name: str) -> bool:
        """Delete a declared secret, usable or withheld, and return True when it was stored."""
        self._require_declared(name)
        existed = False

        def remove(current: Entries) -> Entries:
            nonlocal existed
            existed = current.pop(name, None) is not None
            return write_bindings(current, read_bindings(current)) if existed else current

        with self._lock:
            self.load()
            self._cache = self._store.update(remove)
        log.info("secret deleted app=%s name=%s existed=%s backend=%r", self.manifest.app_id, name,
                 existed, self.backend_name)
        return existed

    def _bind_on_first_use(self, entries: Entries) -> Entries:
        bindings = read_bindings(entries)
        if not any(name in entries and name not in bindings for name in self.manifest.secrets):
            return entries
        newly_bound: list[str] = []

        def bind_missing(current: Entries) -> Entries:
            newly_bound.clear()
            current_bindings = read_bindings(current)
            for name in self.manifest.secrets:
                if name in current and name not in current_bindings:
                    current_bindings[name] = self._origins[name]
                    newly_bound.append(name)
            return write_bindings(current, current_bindings)

        try:
            entries = self._store.update(bind_missing)
        except VaultError as error:
            # The values stay usable in this process. The next load tries to record the binding again.
            log.warning("secret bindings not saved app=%s reason=%s error=%s", self.manifest.app_id, error.reason,
                        error.message)
            entries = bind_missing(dict(entries))
        for name in newly_bound:
            log.warning("secret bound on first use app=%s name=%s origins=%s: the entry had no recorded origins",
                        self.manifest.app_id, name, ",".join(self._origins[name]))
        return entries

    def _entries(self) -> Entries:
        with self._lock:
            self.load()
            assert self._cache is not None
            return self._cache

    def _usable(self, entries: Entries) -> dict[str, str]:
        # Stored entries for names the manifest no longer declares are kept, so a manifest that
        # declares them again finds them, but the host never returns them. Neither does it return
        # a value bound to other origins than the manifest's services would send it to.
        bindings = read_bindings(entries)
        return {name: value for name, value in entries.items()
                if name in self.manifest.secrets and is_covered(bindings.get(name, ()), self._origins[name])}

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

"""The system store: all of an app's secrets in ONE OS keyring entry, through `keyring`.

The entry has service `keyside.<app id>` and username `vault`, and its password is a JSON
object of name to value, so unlocking the app's secrets takes one OS prompt per launch. An
older layout kept one entry per secret (username = secret name); the first load moves those
values into the one entry and then deletes them.

Backends that do not protect secrets at rest are rejected before any read or write. The null
backend discards secrets, and plaintext backends (keyrings.alt) write them to disk unencrypted.
A chainer that includes one of those could store a secret there, so it is rejected too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import keyring
from keyring.backend import KeyringBackend
from keyring.backends import fail, null
from keyring.backends.chainer import ChainerBackend
from keyring.errors import (
    InitError,
    KeyringError,
    KeyringLocked,
    NoKeyringError,
    PasswordDeleteError,
    PasswordSetError,
)

from keyside.redact import Redactor
from keyside.vault.errors import (
    VAULT_LOCKED,
    VAULT_UNAVAILABLE,
    VAULT_WRITE_FAILED,
    WEAK_BACKEND,
    VaultError,
)
from keyside.vault.locking import exclusive_lock
from keyside.vault.store import Change, Entries, decode_entries, encode_entries

log = logging.getLogger(__name__)

ENTRY_USERNAME = "vault"

# Backends known to store secrets unencrypted, by fully qualified class name (keyrings.alt 5).
PLAINTEXT_BACKENDS = frozenset({
    "keyrings.alt.file.PlaintextKeyring",
    "keyrings.alt.pyfs.PlaintextKeyring",
})
# keyrings.alt marks its unencrypted file backends with this `scheme` attribute.
PLAINTEXT_SCHEME = "no encryption"
# Backends that cap one entry's size, with the encoding the cap is measured in. Windows
# Credential Manager stores at most CRED_MAX_CREDENTIAL_BLOB_SIZE = 5 * 512 bytes (wincred.h),
# and keyring 25 writes the password as UTF-16. A larger write fails with an opaque Win32 error.
ENTRY_SIZE_LIMITS: dict[str, tuple[int, str]] = {
    "keyring.backends.Windows.WinVaultKeyring": (5 * 512, "utf-16-le"),
}

if sys.platform.startswith("linux"):
    UNAVAILABLE_FIX = ("Run a Secret Service in your session: GNOME Keyring or KWallet in a desktop; without a "
                       "desktop, start one with `dbus-run-session` and `gnome-keyring-daemon --unlock`. "
                       "Or keep secrets in an encrypted file with --vault file.")
else:
    UNAVAILABLE_FIX = ("Check that you are logged in to the desktop and its keychain or credential manager "
                       "works, or keep secrets in an encrypted file with --vault file.")
LOCKED_FIX = ("Unlock the keyring (log in to the desktop session, or unlock the login keyring in your "
              "keyring manager) and retry, or use --vault file.")
WRITE_FIX = ("Check that the keyring is unlocked and writable, then retry. The stored secrets are unchanged.")
WEAK_FIX = ("Select an OS vault backend, for example PYTHON_KEYRING_BACKEND=keyring.backends.SecretService.Keyring, "
            "or uninstall the plaintext backend (keyrings.alt); or use --vault file.")

T = TypeVar("T")


def backend_label(backend: KeyringBackend) -> str:
    """Return a display name such as `SecretService Keyring`."""
    try:
        return str(backend.name)
    except Exception:  # a third-party backend's name property may raise anything
        return type(backend).__name__


def backend_weakness(backend: KeyringBackend) -> str | None:
    """Return why `backend` must not hold secrets, or None when it protects them at rest."""
    cls = type(backend)
    qualified_name = f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(backend, null.Keyring):
        return f"{qualified_name} discards every secret"
    if (qualified_name in PLAINTEXT_BACKENDS or "plaintext" in cls.__name__.lower()
            or getattr(backend, "scheme", None) == PLAINTEXT_SCHEME):
        return f"{qualified_name} stores secrets unencrypted"
    if isinstance(backend, ChainerBackend):
        for inner in backend.backends:
            inner_weakness = backend_weakness(inner) if not isinstance(inner, fail.Keyring) else None
            if inner_weakness is not None:
                return f"the chained backend {inner_weakness}"
    # keyrings.alt.multi.MultipartKeyringWrapper splits values over the keyring it wraps.
    wrapped = getattr(backend, "_keyring", None)
    if isinstance(wrapped, KeyringBackend):
        return backend_weakness(wrapped)
    return None


def current_backend() -> KeyringBackend:
    """Return the backend `keyring` selected (PYTHON_KEYRING_BACKEND, keyringrc.cfg or detection)."""
    try:
        return keyring.get_keyring()
    except Exception as error:
        # A backend named in PYTHON_KEYRING_BACKEND or keyringrc.cfg is loaded here and raises its
        # own errors: ImportError for a missing module, RuntimeError from a backend that is not
        # viable, FileNotFoundError from the Secret Service backend (keyring 25) without a session bus.
        raise VaultError(f"The system vault cannot start: {type(error).__name__}: {error}.",
                         reason=VAULT_UNAVAILABLE, fix=UNAVAILABLE_FIX) from None


def check_backend(backend: KeyringBackend) -> None:
    """Raise VaultError unless `backend` is an OS vault that protects secrets at rest."""
    if isinstance(backend, fail.Keyring):
        raise VaultError("No OS vault was found: the keyring library has no usable backend on this machine.",
                         reason=VAULT_UNAVAILABLE, fix=UNAVAILABLE_FIX)
    weakness = backend_weakness(backend)
    if weakness is not None:
        raise VaultError(f"The keyring backend is not safe for secrets: {weakness}.", reason=WEAK_BACKEND,
                         fix=WEAK_FIX)


class KeyringStore:
    """All of one app's secrets in one keyring entry, with the old per-name layout migrated."""

    kind = "system"

    def __init__(self, service: str, names: list[str], *, backend: KeyringBackend | None = None,
                 lock_path: Path | None = None):
        """Bind to `service`. `names` are the declared secrets whose old per-name entries are migrated.

        `lock_path` is a lock file that serializes writers in other processes. Without it, only
        writers in this process are serialized.
        """
        self.service = service
        self._names = list(names)
        self._backend = backend if backend is not None else current_backend()
        check_backend(self._backend)
        self.backend_name = f"system ({backend_label(self._backend)})"
        self._lock_path = lock_path

    def load(self) -> Entries:
        with self._locked():
            entries = self._read()
            return self._migrate(entries)

    def update(self, change: Change) -> Entries:
        with self._locked():
            current = self._read()
            updated = change(dict(current))
            if updated != current:
                self._write(updated)
            return dict(updated)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self._lock_path
        if lock_path is not None:
            try:
                lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as error:
                log.warning("vault lock file unavailable path=%s error=%r, so only writers in this process "
                            "are serialized", lock_path, error.strerror)
                lock_path = None
        with exclusive_lock(lock_path, f"keyring:{self.service}"):
            yield

    def _read(self) -> Entries:
        raw = self._call("read", self._backend.get_password, self.service, ENTRY_USERNAME)
        if raw is None:
            return {}
        return decode_entries(
            raw, source=f"The keyring entry {self.service}/{ENTRY_USERNAME}",
            fix=f"Delete the entry (service {self.service}, username {ENTRY_USERNAME}) with your keyring "
                "manager or `secret-tool clear service " + self.service + " username " + ENTRY_USERNAME + "`, "
                "then set the secrets again.",
        )

    def _write(self, entries: Entries) -> None:
        if not entries:
            self._delete_entry(ENTRY_USERNAME)
            return
        payload = encode_entries(entries)
        self._check_entry_size(payload)
        self._call("write", self._backend.set_password, self.service, ENTRY_USERNAME, payload,
                   sensitive=[payload, *entries.values()])

    def _check_entry_size(self, payload: str) -> None:
        cls = type(self._backend)
        limit = ENTRY_SIZE_LIMITS.get(f"{cls.__module__}.{cls.__qualname__}")
        if limit is None:
            return
        max_bytes, encoding = limit
        size = len(payload.encode(encoding))
        if size > max_bytes:
            raise VaultError(f"The app's secrets need {size} bytes in one entry, but {backend_label(self._backend)} "
                             f"stores at most {max_bytes}.", reason=VAULT_WRITE_FAILED,
                             fix="Keep this app's secrets in an encrypted file with --vault file. "
                                 "The stored secrets are unchanged.")

    def _delete_entry(self, username: str) -> bool:
        try:
            self._call("delete", self._backend.delete_password, self.service, username)
        except _EntryNotFound:
            return False
        return True

    def _migrate(self, entries: Entries) -> Entries:
        # Step 1: find values stored under the old layout. A lookup of a missing entry does not
        # prompt on any OS vault, so this costs one call per declared name and no extra prompt.
        old_values: dict[str, str] = {}
        for name in self._names:
            value = self._call("read", self._backend.get_password, self.service, name)
            if value is not None:
                old_values[name] = value
        if not old_values:
            return entries

        # Step 2: write them into the one entry. A value already there is newer and wins.
        merged = dict(entries)
        for name, value in old_values.items():
            if name not in merged and value.strip():
                merged[name] = value.strip()
        if merged != entries:
            self._write(merged)

        # Step 3: only after that write succeeded, remove the old entries. A failure here loses
        # nothing: the next load finds the entry again and the one entry's value wins.
        for name in old_values:
            try:
                self._delete_entry(name)
            except VaultError as error:
                log.warning("old keyring entry not removed service=%s name=%s reason=%s error=%r",
                            self.service, name, error.reason, error.message)
        log.info("vault migrated service=%s names=%s", self.service, ",".join(sorted(old_values)))
        return merged

    def _call(self, operation: str, function: Callable[..., T], *args: str,
              sensitive: list[str] | None = None) -> T:
        """Call one backend method and turn its failure into a VaultError with a fix.

        `sensitive` values are masked in the error message in case a backend quotes its input.
        """
        redactor = Redactor(sensitive or [])
        target = f"the system vault ({backend_label(self._backend)})"
        try:
            return function(*args)
        except KeyringLocked as error:
            raise VaultError(f"Cannot {operation} {target}: it is locked ({redactor.redact(str(error))}).",
                             reason=VAULT_LOCKED, fix=LOCKED_FIX) from None
        except PasswordDeleteError as error:
            if operation == "delete":
                raise _EntryNotFound() from None
            raise VaultError(f"Cannot {operation} {target}: {redactor.redact(str(error))}.",
                             reason=VAULT_WRITE_FAILED, fix=WRITE_FIX) from None
        except PasswordSetError as error:
            raise VaultError(f"Cannot {operation} {target}: {redactor.redact(str(error))}.",
                             reason=VAULT_WRITE_FAILED, fix=WRITE_FIX) from None
        except (NoKeyringError, InitError, KeyringError) as error:
            raise VaultError(f"Cannot {operation} {target}: {redactor.redact(str(error))}.",
                             reason=VAULT_UNAVAILABLE, fix=UNAVAILABLE_FIX) from None
        except Exception as error:  # backends raise their own types (secretstorage, jeepney, pywin32)
            log.warning("keyring backend error operation=%s backend=%r type=%s", operation,
                        backend_label(self._backend), type(error).__name__)
            failed_write = operation in ("write", "delete")
            raise VaultError(f"Cannot {operation} {target}: {type(error).__name__}: {redactor.redact(str(error))}.",
                             reason=VAULT_WRITE_FAILED if failed_write else VAULT_UNAVAILABLE,
                             fix=WRITE_FIX if failed_write else UNAVAILABLE_FIX) from None


class _EntryNotFound(Exception):
    """The backend has no entry to delete."""

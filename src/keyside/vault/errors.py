"""VaultError and the reasons a vault operation fails."""

# ruff: noqa: S105 - the constants below are reason names, not passwords

from __future__ import annotations

from keyside.errors import KeysideError

# The OS vault is missing, not running, or its backend failed to start.
VAULT_UNAVAILABLE = "vault_unavailable"
# The OS vault is locked and was not unlocked (a dismissed or impossible unlock prompt).
VAULT_LOCKED = "vault_locked"
# The selected keyring backend does not protect secrets at rest (plaintext, null or fail).
WEAK_BACKEND = "weak_backend"
# The file vault passphrase does not open the file.
WRONG_PASSPHRASE = "wrong_passphrase"
# The file vault needs a passphrase and none was given.
PASSPHRASE_REQUIRED = "passphrase_required"
# A new file vault passphrase is too short.
WEAK_PASSPHRASE = "weak_passphrase"
# The stored data is unreadable: a tampered or truncated file, or a malformed keyring entry.
VAULT_CORRUPT = "vault_corrupt"
# Persisting a change failed. The stored state and the cache are unchanged.
VAULT_WRITE_FAILED = "vault_write_failed"
# The secret name is not declared in the app manifest.
UNKNOWN_SECRET = "unknown_secret"
# The secret value is not usable as an API key (control characters, too long, not text).
INVALID_SECRET_VALUE = "invalid_secret_value"
# The secret has no stored value, so there is nothing to bind.
SECRET_NOT_STORED = "secret_not_stored"
# The stored value was saved for other upstream origins than the manifest's services use now.
SECRET_BINDING_MISMATCH = "secret_binding_mismatch"
# The vault kind is not one of system, file, memory.
UNKNOWN_VAULT_KIND = "unknown_vault_kind"


class VaultError(KeysideError):
    """A failed vault operation, with `reason` from the names above and the user's next step in `fix`.

    The message never contains a secret value or a passphrase.
    """

    reason = VAULT_UNAVAILABLE

"""The host's vault: an app's secrets in the OS keyring, an encrypted file, or memory.

There is no silent fallback between kinds: when the OS vault is unavailable, locked or unsafe,
opening or loading raises VaultError with a fix, and the user chooses another kind.
"""

from __future__ import annotations

from pathlib import Path

from keyside.manifest import Manifest
from keyside.paths import data_dir
from keyside.vault.core import MAX_SECRET_VALUE_CHARS, Vault, normalize_value
from keyside.vault.errors import UNKNOWN_VAULT_KIND, VaultError
from keyside.vault.file_store import SCRYPT_N, FileStore
from keyside.vault.keyring_store import KeyringStore
from keyside.vault.store import MemoryStore, SecretStore

VAULT_KINDS = ("system", "file", "memory")
DEFAULT_VAULT_KIND = "system"
FILE_VAULT_NAME = "vault.enc"
KEYRING_LOCK_NAME = "keyring.lock"

__all__ = [
    "DEFAULT_VAULT_KIND",
    "MAX_SECRET_VALUE_CHARS",
    "VAULT_KINDS",
    "FileStore",
    "KeyringStore",
    "MemoryStore",
    "SecretStore",
    "Vault",
    "VaultError",
    "default_file_path",
    "normalize_value",
    "open_store",
    "open_vault",
]


def default_file_path(app_id: str) -> Path:
    """Return the file vault path for `app_id` that applies when --vault-file is not given."""
    return data_dir(app_id) / FILE_VAULT_NAME


def open_store(manifest: Manifest, kind: str = DEFAULT_VAULT_KIND, *, file_path: Path | str | None = None,
               passphrase: str | None = None, scrypt_n: int = SCRYPT_N) -> SecretStore:
    """Build the store of `kind` for `manifest`, or raise VaultError when it cannot be used."""
    if kind == "system":
        return KeyringStore(manifest.keyring_service, sorted(manifest.secrets),
                            lock_path=data_dir(manifest.app_id) / KEYRING_LOCK_NAME)
    if kind == "file":
        path = Path(file_path).expanduser() if file_path is not None else default_file_path(manifest.app_id)
        return FileStore(path, passphrase, scrypt_n=scrypt_n)
    if kind == "memory":
        return MemoryStore()
    raise VaultError(f"Unknown vault kind {kind!r}.", reason=UNKNOWN_VAULT_KIND,
                     fix=f"Use one of: {', '.join(VAULT_KINDS)}.")


def open_vault(manifest: Manifest, kind: str = DEFAULT_VAULT_KIND, *, file_path: Path | str | None = None,
               passphrase: str | None = None) -> Vault:
    """Open the vault of `kind` for `manifest`. Secrets load on first use or on `load()`.

    `system` checks the keyring backend now and rejects unsafe ones. `file` needs `passphrase`.
    """
    return Vault(manifest, open_store(manifest, kind, file_path=file_path, passphrase=passphrase))

"""The storage interface behind a Vault, the JSON encoding of its entries, and the memory store.

A store contains all of one app's secrets as one mapping of name to value. `update` changes it,
and the keyring store's `load` also writes when it migrates old entries. Both run under the
store's lock. `update` re-reads the persisted mapping, applies the change and writes the result,
so two keyside writers that change different names keep each other's update.
The file store and the keyring store lock across processes through a lock file. When the keyring
store cannot create its lock file's folder, it logs a warning and serializes only the writers in
its own process. A keyring manager or another tool that edits the entry takes no lock at all.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Protocol

from keyside.vault.errors import VAULT_CORRUPT, VaultError

Entries = dict[str, str]
Change = Callable[[Entries], Entries]


class SecretStore(Protocol):
    """One backend: the OS keyring, an encrypted file, or process memory."""

    kind: str
    backend_name: str

    def load(self) -> Entries:
        """Read the stored mapping (running any one-time migration) and return a copy."""
        ...

    def update(self, change: Change) -> Entries:
        """Re-read under the store's lock, persist `change(current)` and return it.

        Raises VaultError and leaves the stored mapping as it was when the read or write fails.
        """
        ...


def encode_entries(entries: Entries) -> str:
    """Encode a mapping as the compact JSON object that a store persists."""
    return json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decode_entries(text: str, *, source: str, fix: str) -> Entries:
    """Parse a stored JSON object of name to value, or raise VaultError(vault_corrupt).

    `source` names the entry or file in the error message. The message never quotes the text,
    because the text contains secret values.
    """
    try:
        data = json.loads(text)
    except ValueError:
        raise VaultError(f"{source} is not valid JSON.", reason=VAULT_CORRUPT, fix=fix) from None
    if not isinstance(data, dict):
        raise VaultError(f"{source} is not a JSON object.", reason=VAULT_CORRUPT, fix=fix)
    for name, value in data.items():
        if not isinstance(value, str):
            raise VaultError(f"{source}: the value of {name!r} is not a string.", reason=VAULT_CORRUPT, fix=fix)
    return dict(data)


class MemoryStore:
    """A store that lives in process memory only, for tests, demos and one-off sessions."""

    kind = "memory"
    backend_name = "memory (this process only, nothing is saved)"

    def __init__(self, initial: Entries | None = None):
        self._lock = threading.Lock()
        self._entries: Entries = dict(initial or {})

    def load(self) -> Entries:
        with self._lock:
            return dict(self._entries)

    def update(self, change: Change) -> Entries:
        with self._lock:
            updated = change(dict(self._entries))
            self._entries = dict(updated)
            return dict(updated)

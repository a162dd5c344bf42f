"""The tokens that authenticate callers: one UI session token and any number of scoped exec tokens.

The UI token opens every route. An exec token, issued by the host for `keyside exec`, opens only
`/api/svc/<service>/...` of the services it lists. The two kinds are kept apart, so rotating the UI
token leaves exec tokens working and revoking an exec token leaves the UI untouched.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

UI_TOKEN_ID = "ui"  # noqa: S105 - the id of the UI token, not a credential
# A presented credential longer than this cannot be a token; it is not hashed or compared.
MAX_PRESENTED_CHARS = 1024


@dataclass(frozen=True)
class TokenGrant:
    """The routes a matched token opens: every route for the UI token, or its listed services."""

    token_id: str
    services: frozenset[str] | None  # None for the UI token

    @property
    def is_ui(self) -> bool:
        return self.services is None

    def allows_service(self, name: str) -> bool:
        return self.services is None or name in self.services


@dataclass(frozen=True)
class _Entry:
    token: str
    digest: bytes
    grant: TokenGrant


def _digest(value: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison time independent of the token length.
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class TokenConflict(ValueError):
    """A new token equals one already registered, or its id is taken."""


class TokenRegistry:
    """The UI token and the exec tokens, matched in constant time."""

    def __init__(self, ui_token: str | None = None):
        self._ui: _Entry | None = None
        self._exec: dict[str, _Entry] = {}
        # Every entry, rebuilt on each change, because match() runs on every request.
        self._all: tuple[_Entry, ...] = ()
        self._tokens: tuple[str, ...] = ()
        if ui_token:
            self.set_ui_token(ui_token)

    def set_ui_token(self, token: str) -> None:
        """Replace the UI token; the previous one stops working at once. Exec tokens are kept."""
        if any(hmac.compare_digest(_digest(token), entry.digest) for entry in self._exec.values()):
            raise TokenConflict("the new UI token equals an exec token")
        self._ui = _Entry(token, _digest(token), TokenGrant(UI_TOKEN_ID, None))
        self._rebuild()

    def add_exec_token(self, token_id: str, token: str, services: frozenset[str]) -> None:
        if token_id == UI_TOKEN_ID or token_id in self._exec:
            raise TokenConflict(f"token id {token_id!r} is already in use")
        digest = _digest(token)
        if any(hmac.compare_digest(digest, entry.digest) for entry in self._entries()):
            raise TokenConflict("the token equals one already registered")
        self._exec[token_id] = _Entry(token, digest, TokenGrant(token_id, services))
        self._rebuild()

    def revoke_exec_token(self, token_id: str) -> bool:
        """Remove an exec token; return False when no token had that id."""
        removed = self._exec.pop(token_id, None) is not None
        self._rebuild()
        return removed

    def _rebuild(self) -> None:
        self._all = (*self._exec.values(), *((self._ui,) if self._ui is not None else ()))
        self._tokens = tuple(entry.token for entry in self._all)

    def _entries(self) -> tuple[_Entry, ...]:
        return self._all

    def match(self, presented: str | None, *, allow_ui: bool = True) -> TokenGrant | None:
        """Return the grant of the token equal to `presented`, or None.

        Every registered token is compared, whatever matched first, so the time taken does not tell
        which token or how much of it matched. An empty registry or an empty value matches nothing.
        """
        if not presented or len(presented) > MAX_PRESENTED_CHARS:
            return None
        digest = _digest(presented)
        found: TokenGrant | None = None
        for entry in self._entries():
            if hmac.compare_digest(digest, entry.digest) and (allow_ui or not entry.grant.is_ui):
                found = entry.grant
        return found

    def values(self) -> tuple[str, ...]:
        """Return every registered token, for redaction of logs and URLs."""
        return self._tokens

    @property
    def exec_token_count(self) -> int:
        return len(self._exec)

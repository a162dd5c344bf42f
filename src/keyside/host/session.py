"""Session credentials: the UI token and handshake nonce of one sidecar start, held in memory only.

Each sidecar start gets a fresh 256-bit token from the OS CSPRNG (`secrets`), so a token seen by
a crashed sidecar, or by the page of a previous run, authenticates nothing afterwards. The token
reaches the sidecar through its stdin bootstrap only: never argv, the environment, a file or a log.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from keyside.sidecar.protocol import NONCE_BYTES, TOKEN_BYTES


def new_token() -> str:
    """Return a fresh 256-bit token, hex-encoded."""
    return secrets.token_hex(TOKEN_BYTES)


@dataclass(frozen=True)
class Session:
    """The credentials of one sidecar start. The repr never shows the token."""

    token: str = field(default_factory=new_token, repr=False)
    nonce: str = field(default_factory=lambda: secrets.token_hex(NONCE_BYTES), repr=False)
    created_at: float = field(default_factory=time.monotonic)

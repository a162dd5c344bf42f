"""The base error type: every security or configuration failure carries a named reason."""

from __future__ import annotations


class KeysideError(Exception):
    """An error with a stable reason name, a message and an optional fix.

    `reason` is a short snake_case name (for example `host_not_allowed`) that reaches logs,
    IPC replies and HTTP error bodies unchanged, so a caller can branch on it. The message
    never contains a secret value, the session token or a URL query.
    """

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None, fix: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message} Fix: {self.fix}"
        return self.message

    def to_dict(self) -> dict[str, str]:
        """Return the error as a JSON-safe object for IPC replies and HTTP bodies."""
        body = {"reason": self.reason, "message": self.message}
        if self.fix:
            body["fix"] = self.fix
        return body


class ManifestError(KeysideError):
    """An invalid or missing keyside.toml; the message names the file, key and fix."""

    reason = "invalid_manifest"

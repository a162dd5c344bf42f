"""The audit log: one JSON line per call to an audited command, allowed or not.

Each record has the time (UTC), the window label, the command, the secret name and the outcome
with its reason. It never has an argument value: the secret name is written only when it is one
the manifest declares, because a page that mixed up its fields may have put a key in `name`.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from keyside.host.logfiles import open_private_handler
from keyside.redact import Redactor

AUDIT_LOG_NAME = "audit.log"
# Window labels are at most 32 characters in a manifest; longer text is not a label.
MAX_AUDIT_FIELD_CHARS = 64

OUTCOME_OK = "ok"
OUTCOME_DENIED = "denied"
OUTCOME_FAILED = "failed"


class AuditLog:
    """Appends audit records to `directory/audit.log` (owner-only, rotated by size). Thread-safe."""

    def __init__(self, directory: Path, redactor: Redactor):
        self.path = directory / AUDIT_LOG_NAME
        self._lock = threading.Lock()
        self._handler = open_private_handler(directory, AUDIT_LOG_NAME, redactor)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # A logger of its own, outside the logging tree, so audit lines go to this file only.
        self._logger = logging.Logger("keyside.audit", logging.INFO)
        self._logger.addHandler(self._handler)

    def record(self, *, window: str, command: str, secret: str | None, outcome: str,
               reason: str | None = None) -> None:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "window": str(window)[:MAX_AUDIT_FIELD_CHARS],
            "command": str(command)[:MAX_AUDIT_FIELD_CHARS],
            "secret": secret,
            "outcome": outcome,
            "reason": reason,
        }
        with self._lock:
            self._logger.info(json.dumps(entry, ensure_ascii=True))

    def close(self) -> None:
        with self._lock:
            self._logger.removeHandler(self._handler)
            self._handler.close()

"""The host's log files: owner-only, size-rotated, and passed through the redacting filter."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import IO

from keyside.paths import ensure_private_dir
from keyside.redact import RedactingFilter, Redactor

HOST_LOG_NAME = "host.log"
# With three backups, each log uses at most about 4 MiB of disk.
MAX_LOG_FILE_BYTES = 1024 * 1024
LOG_FILE_BACKUPS = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files, including rotated ones, are readable by the owner only."""

    def _open(self) -> IO[str]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.baseFilename, flags, 0o600)
        if sys.platform != "win32":
            os.chmod(self.baseFilename, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)


def open_private_handler(directory: Path, filename: str, redactor: Redactor) -> PrivateRotatingFileHandler:
    """Return a rotating handler for `directory/filename` that redacts every record."""
    ensure_private_dir(directory)
    handler = PrivateRotatingFileHandler(directory / filename, maxBytes=MAX_LOG_FILE_BYTES,
                                         backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
    handler.addFilter(RedactingFilter(redactor))
    return handler


class HostLogFile:
    """Attaches `host.log` to the `keyside` logger for the lifetime of one host.

    The logger's level is left to the application (the CLI's --log-level), so the file gets
    the same records as the console: warnings and errors by default.
    """

    def __init__(self, directory: Path, redactor: Redactor):
        self.path = directory / HOST_LOG_NAME
        self._handler = open_private_handler(directory, HOST_LOG_NAME, redactor)
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._logger = logging.getLogger("keyside")
        self._logger.addHandler(self._handler)

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()

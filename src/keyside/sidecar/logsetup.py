"""Logging for the sidecar process: a rotating file in the app's log folder, and stderr.

Every handler carries a RedactingFilter, so each secret value, its leak forms and every token the
sidecar has seen are masked, and URL queries are cut, in every line from every logger (aiohttp's
included). aiohttp's access log is off, because it would write full request URLs.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from keyside.paths import ensure_private_dir
from keyside.redact import RedactingFilter, Redactor

LOG_FILE_NAME = "sidecar.log"
# 1 MiB per file and 3 old files: days of normal use, and bounded when something loops.
LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUP_COUNT = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

logger = logging.getLogger(__name__)


def _reset_root(level: str) -> logging.Logger:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    return root


def configure_early_logging(redactor: Redactor) -> None:
    """Log warnings to stderr until the bootstrap names the log folder."""
    root = _reset_root("WARNING")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactingFilter(redactor))
    root.addHandler(handler)


def configure_logging(redactor: Redactor, level: str, log_dir: Path | None) -> Path | None:
    """Send logs to `log_dir`/sidecar.log (when given) and to stderr; return the file path or None.

    With a file, stderr gets warnings and errors only, because the host copies the sidecar's stderr
    into its own log. A folder that cannot be created leaves logging on stderr, with a warning.
    """
    root = _reset_root(level)
    log_filter = RedactingFilter(redactor)
    formatter = logging.Formatter(LOG_FORMAT)

    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(formatter)
    stderr_handler.addFilter(log_filter)
    root.addHandler(stderr_handler)

    log_file = None
    if log_dir is not None:
        try:
            ensure_private_dir(log_dir)
            log_file = log_dir / LOG_FILE_NAME
            file_handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUP_COUNT, encoding="utf-8")
        except OSError as error:
            logger.warning("log folder not usable, logging to stderr only path=%s error=%s", log_dir,
                           error.strerror or type(error).__name__)
            return None
        file_handler.setFormatter(formatter)
        file_handler.addFilter(log_filter)
        root.addHandler(file_handler)
        stderr_handler.setLevel(logging.WARNING)
    return log_file

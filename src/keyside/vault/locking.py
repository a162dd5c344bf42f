"""Exclusive locks that serialize vault writers across threads and processes.

A lock file next to the data (an advisory `flock` on POSIX, `msvcrt.locking` on Windows)
covers other processes. A process-local lock per path covers threads, and also other Vault
instances in the same process on platforms where file locks do not exclude the same process.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keyside.vault.errors import VAULT_WRITE_FAILED, VaultError

# A writer keeps the lock for one read, one encryption and one write. scrypt took under half a
# second here (see SCRYPT_N in file_store.py), and ten seconds leaves room for a machine several
# times slower, so a longer wait means a stuck process, not a busy one.
LOCK_TIMEOUT_S = 10.0
LOCK_POLL_INTERVAL_S = 0.02

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


def process_lock(key: str) -> threading.Lock:
    """Return the one process-wide lock for `key` (a path or a keyring service name)."""
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.Lock())


@contextmanager
def exclusive_lock(lock_path: Path | None, key: str, *, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the process lock for `key` and, when `lock_path` is given, the file lock on it.

    Raises VaultError(vault_write_failed) when another writer holds the lock past `timeout_s`.
    """
    local = process_lock(key)
    if not local.acquire(timeout=timeout_s):
        raise _timeout_error(lock_path or Path(key), timeout_s)
    try:
        if lock_path is None:
            yield
            return
        with _file_lock(lock_path, timeout_s):
            yield
    finally:
        local.release()


@contextmanager
def _file_lock(lock_path: Path, timeout_s: float) -> Iterator[None]:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise VaultError(f"Cannot create the lock file {lock_path}: {error.strerror}.",
                         reason=VAULT_WRITE_FAILED,
                         fix=f"Check that {lock_path.parent} exists and is writable by you.") from None
    try:
        deadline = time.monotonic() + timeout_s
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise _timeout_error(lock_path, timeout_s)
            time.sleep(LOCK_POLL_INTERVAL_S)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def _timeout_error(lock_path: Path, timeout_s: float) -> VaultError:
    return VaultError(f"Another keyside process held the vault lock {lock_path} for more than {timeout_s:g} s.",
                      reason=VAULT_WRITE_FAILED,
                      fix="Wait for the other keyside command to finish, or end it, then retry.")


if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

"""Ties the sidecar's lifetime to its host's: the Linux parent-death signal and an exit deadline.

This module imports only the standard library, so `python -m keyside.sidecar` can set the signal
before the slow imports run: a host killed during those imports would otherwise leave the sidecar
waiting for a signal that was never armed. End of file on stdin remains the main stop signal.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
# From the decision to stop to process exit, whatever is still running.
EXIT_DEADLINE_S = 0.9


def set_parent_death_signal() -> str | None:
    """Ask Linux to send SIGTERM when the parent dies; return an error text, or None on success.

    Elsewhere this does nothing and returns None.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return f"prctl failed errno={ctypes.get_errno()}"
    except (OSError, AttributeError) as error:
        return f"prctl unavailable error={error}"
    return None


def exit_after_deadline(code: int) -> None:
    """Start a timer that ends the process with `code` after EXIT_DEADLINE_S.

    A shutdown step that hangs (a stuck upstream close, a blocked pipe write) must not keep the
    sidecar alive after its host is gone.
    """
    timer = threading.Timer(EXIT_DEADLINE_S, os._exit, args=(code,))
    timer.daemon = True
    timer.start()

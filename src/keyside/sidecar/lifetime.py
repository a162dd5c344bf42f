"""Ties the sidecar's lifetime to its host's: the Linux parent-death signal and an exit deadline.

This module imports only the standard library and `keyside.parent_death`, so
`python -m keyside.sidecar` can set the signal before the slow imports run. A host killed during
those imports would otherwise leave the sidecar waiting for a signal that was never armed. End of
file on stdin remains the main stop signal.
"""

from __future__ import annotations

import os
import threading

from keyside.parent_death import set_parent_death_signal

__all__ = ["EXIT_DEADLINE_S", "exit_after_deadline", "set_parent_death_signal"]

# From the decision to stop to process exit, whatever is still running.
EXIT_DEADLINE_S = 0.9


def exit_after_deadline(code: int) -> None:
    """Start a timer that ends the process with `code` after EXIT_DEADLINE_S.

    A shutdown step that hangs (a stuck upstream close, a blocked pipe write) must not keep the
    sidecar alive after its host is gone.
    """
    timer = threading.Timer(EXIT_DEADLINE_S, os._exit, args=(code,))
    timer.daemon = True
    timer.start()

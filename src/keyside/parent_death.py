"""The Linux parent-death signal: SIGTERM from the kernel to a process whose parent has died.

The sidecar arms it for itself, so it stops with a host that was killed. `keyside exec` arms it
in its child, so the command stops with a `keyside exec` that was killed, rather than run on with
a token that no longer works. This module imports only the standard library, because the
sidecar arms the signal before its slow imports. Elsewhere than on Linux it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def load_prctl() -> Callable[..., int]:
    """Return libc's prctl function. Raise OSError or AttributeError when it is not available."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl  # type: ignore[no-any-return]


def set_parent_death_signal() -> str | None:
    """Arm SIGTERM for this process when its parent dies. Return an error text, or None on success.

    Elsewhere than on Linux this does nothing and returns None.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = load_prctl()
    except (OSError, AttributeError) as error:
        return f"prctl unavailable error={error}"
    if prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return f"prctl failed errno={ctypes.get_errno()}"
    return None


def child_death_hook() -> Callable[[], None] | None:
    """Return a `preexec_fn` for Popen that arms the parent-death signal in the child, or None.

    libc is loaded here, in the parent, because the hook runs between fork and exec, where only
    simple calls are safe. prctl(2) ties the signal to the thread that forks, so the caller must
    spawn from a thread that lives as long as the child should. A parent that dies before the
    hook runs is caught by comparing the child's parent id with the spawning process's id.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = load_prctl()
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return arm

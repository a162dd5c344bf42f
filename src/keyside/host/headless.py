"""Run the host without windows: start the sidecar, print its URL, and stop on SIGINT or SIGTERM.

Used by `keyside run --headless` and by Python code that only needs the sidecar. The URL is
printed; the session token never is.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any, TextIO

from keyside.host.host import Host
from keyside.manifest import Manifest

log = logging.getLogger(__name__)

# Printed after the URL, because every request needs the session token, which is never printed.
HEADLESS_PURPOSE = (
    "keyside: requests need the session token, which is never printed, so a request sent by hand gets token_missing.\n"
    "keyside: to call a service, embed the host in Python (docs/python-api.md) or run "
    "`keyside exec -- COMMAND`, which gives COMMAND its own URL and token."
)
EXIT_OK = 0
EXIT_FAILURE = 1
# How often the wait loop checks for a sidecar that has failed for good.
STATE_POLL_S = 0.5
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                                 getattr(signal, "SIGHUP", None)) if s is not None)


def run_headless(manifest: Manifest, vault: Any, *, out: TextIO | None = None, **host_options: Any) -> int:
    """Run a host until SIGINT, SIGTERM or SIGHUP; return an exit code (0 after a clean stop).

    `host_options` are passed to Host (sidecar_command, preferred_port, log_dir, settings, ...).
    Signal handlers are installed only when called from the main thread.
    """
    out = out or sys.stdout
    stop_requested = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, lambda number, frame: stop_requested.set())

    host = Host(manifest, vault, **host_options)
    try:
        host.start()
        print(f"keyside: {manifest.name} sidecar listening on {host.sidecar_url}", file=out, flush=True)
        print(HEADLESS_PURPOSE, file=out, flush=True)
        print("keyside: press Ctrl-C to stop", file=out, flush=True)
        while not stop_requested.wait(STATE_POLL_S):
            state = host.sidecar_state
            if state["state"] == "failed":
                print(f"keyside: error: the sidecar failed ({state['reason']}): {state['message']}",
                      file=sys.stderr, flush=True)
                return EXIT_FAILURE
        log.info("stop requested app=%s", manifest.app_id)
        return EXIT_OK
    finally:
        host.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)

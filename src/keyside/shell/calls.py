"""One UI call, the same in both modes: run it through the dispatcher and shape the reply.

Desktop windows (Qt web channel) and browser tabs (IPC endpoint) send the page the same reply:
{"ok": true, "result": ...} or {"ok": false, "error": {"reason", "message", "fix"?}}.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from keyside.errors import KeysideError

logger = logging.getLogger(__name__)

# One call as the page sends it: the host's argument cap (64 KiB of JSON) plus the command name
# and framing.
MAX_CALL_BYTES = 80 * 1024
# Calls of one window that may wait for the host at once; more means a page is flooding the host.
MAX_CONCURRENT_CALLS = 16

# (window label, the window's current URL, command, args) -> a JSON-serialisable result.
# Raises KeysideError (the host's IpcError is one) with the reason the page receives.
Invoke = Callable[[str, str, str, dict[str, Any]], Any]


class CallReply:
    """The reply to one call, and whether it failed inside keyside rather than in the command."""

    def __init__(self, body: dict[str, Any], *, internal_error: bool = False):
        self.body = body
        self.internal_error = internal_error

    def to_json(self) -> str:
        return json.dumps(self.body)


def run_call(invoke: Invoke, label: str, current_url: str, command: str, args: dict[str, Any]) -> CallReply:
    """Run one UI call and return its reply. Every exception becomes an error reply."""
    try:
        result = invoke(label, current_url, command, args)
        json.dumps(result)
    except KeysideError as error:
        return CallReply({"ok": False, "error": error.to_dict()})
    except Exception as error:  # noqa: BLE001 - a failed call must reach the page as an error reply
        # Only the type is logged: the message of an unexpected error may quote call arguments.
        logger.error("ui call failed reason=internal_error window=%s command=%s error=%s",
                     label, command, type(error).__name__)
        return CallReply({"ok": False, "error": {"reason": "internal_error",
                                                  "message": "The host failed to run this command; see its log."}},
                         internal_error=True)
    return CallReply({"ok": True, "result": result})

"""The check for URLs that a page requests the host to open in the system browser.

Only http, https and mailto pass. Everything else (javascript:, file:, data:, custom schemes
that start local programs) is rejected, as are control characters and whitespace, which
browsers and OS URL handlers strip or interpret differently from this check.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit

from keyside.host.ipc import IpcError

EXTERNAL_SCHEMES = ("http", "https", "mailto")
# Real links fit easily; OS URL handlers truncate or reject much longer ones.
MAX_EXTERNAL_URL_CHARS = 2048
# Control characters, bidirectional and other formatting marks, and every kind of space: each can
# make the URL the user sees differ from the URL that opens.
HIDDEN_CHAR_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _reject(problem: str) -> IpcError:
    return IpcError(f"Cannot open this URL: {problem}.", reason="external_url_not_allowed",
                    fix="open only http, https or mailto links")


def check_external_url(url: str) -> str:
    """Return `url` when it may be opened in the system browser; raise IpcError otherwise."""
    if len(url) > MAX_EXTERNAL_URL_CHARS:
        raise _reject(f"longer than {MAX_EXTERNAL_URL_CHARS} characters")
    if any(unicodedata.category(c) in HIDDEN_CHAR_CATEGORIES for c in url) or "\\" in url:
        raise _reject("it contains whitespace, control or formatting characters, or backslashes")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _reject("it does not parse") from None
    scheme = parts.scheme.lower()
    if scheme not in EXTERNAL_SCHEMES:
        raise _reject(f"scheme {scheme + ':' if scheme else '(none)'} is not allowed")
    if scheme == "mailto":
        if not parts.path or parts.netloc:
            raise _reject("a mailto link needs an address")
        return url
    if not parts.hostname:
        raise _reject("it has no host")
    if "@" in parts.netloc:
        # `https://bank.example@evil.example/` shows one host and opens another.
        raise _reject("it contains user information")
    return url

"""URL check: parse a URL once, strictly, into the exact form the client will fetch.

A URL parser and a resolver that read one host differently is a classic way past an SSRF
check. So this module rejects anything two parsers might disagree on: backslashes, whitespace,
control characters, userinfo, percent-encoded hosts and zone ids. It turns every numeric IPv4
spelling the OS resolver accepts ("0x7f.1", "017700000001", "2130706433", "127.1") into the
dotted-quad address it means. The client then fetches `CheckedUrl.url` byte for byte.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from keyside.guard.addresses import IPAddress
from keyside.guard.errors import GuardDenied

DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 1035 limits a name to 253 characters in text form and a label to 63.
MAX_HOST_CHARS = 253
MAX_LABEL_CHARS = 63
# Browsers reject longer URLs or truncate them; no API endpoint needs more.
MAX_URL_CHARS = 8192

# A label of a host name after IDNA: letters, digits, hyphen, and underscore, which some
# real service names use even though IDNA rejects it.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
# A label that the OS resolver would read as a number (decimal, octal or hex).
_NUMERIC_LABEL = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")
# Characters kept as they are in a path or query; everything else is percent-encoded.
_PATH_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%")
# Printable ASCII without space and backslash: the common case, checked in one regex call.
_PLAIN_ASCII = re.compile(r"[!-\[\]-~]*")
_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# A path and query made only of _PATH_SAFE characters and valid escapes, which encoding keeps as is.
_ENCODED_PATH_QUERY = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
# Distinct authorities (host and port spellings) whose check result is kept.
AUTHORITY_CACHE_ENTRIES = 256


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the check, in the normalised form the client sends."""

    scheme: str
    host: str  # IDNA ASCII, lower case, no trailing dot, IPv6 without brackets
    port: int
    address: IPAddress | None  # the literal address when the host is an IP address
    path_query: str  # path and query as sent, percent-encoded; the fragment is dropped
    url: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_port(self) -> str:
        """The host and port for messages and logs (never the path or query)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _deny(reason: str, message: str, fix: str | None = None) -> GuardDenied:
    return GuardDenied(reason, message, fix=fix)


def check_url(url: str) -> CheckedUrl:
    """Check `url` and return its normalised form, or raise GuardDenied with a `url_*` reason.

    This is the syntax check only. Whether the host's address may be dialled is decided by the
    client with its policy, because explicit private allowances depend on it.
    """
    if not isinstance(url, str):
        raise _deny("url_invalid", f"URL must be a string, got {type(url).__name__}.")
    if len(url) > MAX_URL_CHARS:
        raise _deny("url_too_long", f"URL is longer than {MAX_URL_CHARS} characters.")
    _reject_bad_characters(url)

    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise _deny("url_invalid_host", f"URL cannot be parsed: {error}.") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise _deny("url_scheme", f"URL scheme {parts.scheme or '(none)'!r} is not allowed.",
                    "Use an http:// or https:// URL.")
    if not url[len(parts.scheme):].startswith("://"):
        raise _deny("url_invalid_host", "URL has no host.", "Write the URL as scheme://host/path.")
    if "@" in parts.netloc:
        raise _deny("url_userinfo", "URL contains user information before the host.",
                    "Remove the user:password@ part; credentials are injected by keyside.")

    host, port, address = _check_authority(parts.netloc, scheme)
    path_query = _encode_path_query(parts.path or "/", parts.query)
    shown_host = f"[{host}]" if ":" in host else host
    netloc = shown_host if port == DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    return CheckedUrl(scheme, host, port, address, path_query, f"{scheme}://{netloc}{path_query}")


def _reject_bad_characters(url: str) -> None:
    if _PLAIN_ASCII.fullmatch(url):
        return
    for char in url:
        if char == "\\":
            raise _deny("url_backslash", "URL contains a backslash.",
                        "Use forward slashes; parsers disagree on what a backslash means.")
        if char.isspace() or char in "\u200b\u2060\ufeff":
            raise _deny("url_whitespace", f"URL contains whitespace (U+{ord(char):04X}).",
                        "Percent-encode spaces as %20 and remove line breaks.")
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise _deny("url_control_chars", f"URL contains a control character (U+{ord(char):04X}).",
                        "Remove control characters from the URL.")


# A client sends many requests to few origins, so the host and port checks of each distinct
# authority run once. The result depends only on the two strings, and a rejected authority
# raises again on every call, because lru_cache stores no exceptions.
@functools.lru_cache(maxsize=AUTHORITY_CACHE_ENTRIES)
def _check_authority(netloc: str, scheme: str) -> tuple[str, int, IPAddress | None]:
    """Return the normalised host, the port and the literal address (or None) of `netloc`."""
    host = _normalise_netloc_host(netloc)
    port = _parse_port(netloc, scheme)
    address = _literal_address(host)
    if address is not None:
        host = str(address)
    return host, port, address


def _normalise_netloc_host(netloc: str) -> str:
    """Return the host of `netloc` as IDNA ASCII, lower case, with one trailing dot removed."""
    host = netloc
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            raise _deny("url_invalid_host", "URL has an unclosed IPv6 bracket.")
        inner = host[1:end]
        if "%" in inner:
            raise _deny("url_zone_id", "URL contains an IPv6 zone id.",
                        "Remove the %zone part; a zone selects a local interface.")
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise _deny("url_invalid_host", f"{inner!r} in brackets is not an IPv6 address.") from None

    host = host.rsplit(":", 1)[0] if ":" in host else host
    if not host:
        raise _deny("url_invalid_host", "URL has an empty host.")
    if "%" in host:
        raise _deny("url_invalid_host", "URL host contains a percent-encoded character.",
                    "Write the host name without %-escapes.")
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise _deny("url_invalid_host", "URL host is only a dot.")

    if host.isascii():
        host = host.lower()
    else:
        # UTS 46 mapping also turns fullwidth digits and dots into ASCII, so the numeric check
        # below reads "１２７.０.０.１" as 127.0.0.1.
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as error:
            raise _deny("url_invalid_host", f"host is not a valid internationalised name: {error}.") from None
        if host.endswith("."):
            host = host[:-1]

    if len(host) > MAX_HOST_CHARS:
        raise _deny("url_invalid_host", f"host is longer than {MAX_HOST_CHARS} characters.")
    labels = host.split(".")
    if _ipv4_from_inet_aton(host) is not None:
        return host
    if _NUMERIC_LABEL.match(labels[-1]):
        raise _deny("url_invalid_host", f"host {host!r} ends in a number but is not an IPv4 address.",
                    "Write an IPv4 address as four decimal numbers (a.b.c.d).")
    for label in labels:
        if not label or len(label) > MAX_LABEL_CHARS or not _LABEL.match(label):
            raise _deny("url_invalid_host", f"host {host!r} is not a valid host name.")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise _deny("url_invalid_host", f"host label {label!r} is not valid punycode.") from None
    return host


def _parse_port(netloc: str, scheme: str) -> int:
    rest = netloc.rsplit("]", 1)[1] if netloc.startswith("[") else netloc
    if netloc.startswith("[") and rest and not rest.startswith(":"):
        raise _deny("url_invalid_host", "URL has characters after the IPv6 bracket.")
    if ":" not in rest:
        return DEFAULT_PORTS[scheme]
    text = rest.rsplit(":", 1)[1]
    if text == "":
        return DEFAULT_PORTS[scheme]
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise _deny("url_invalid_port", f"port {text!r} is not a number from 1 to 65535.")
    return int(text)


def _literal_address(host: str) -> IPAddress | None:
    if ":" in host:
        return ipaddress.IPv6Address(host)
    return _ipv4_from_inet_aton(host)


def _ipv4_from_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """Parse `host` the way inet_aton(3) does, or return None when it is not numeric.

    A host has one to four parts, each decimal, octal (leading 0) or hex (0x). The last part
    fills all remaining bytes, so "127.1" and "2130706433" are both 127.0.0.1.
    """
    parts = host.split(".")
    if len(parts) > 4 or not all(_NUMERIC_LABEL.match(p) for p in parts):
        return None
    values = []
    for part in parts:
        if part[:2].lower() == "0x":
            if len(part) == 2:
                return None  # inet_aton rejects a bare "0x"
            values.append(int(part, 16))
        elif len(part) > 1 and part.startswith("0"):
            if not all(c in "01234567" for c in part):
                return None
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for index, value in enumerate(head):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _encode_path_query(path: str, query: str) -> str:
    """Percent-encode what is not allowed raw in a path or query; keep valid %XX escapes."""
    text = path if not query else f"{path}?{query}"
    if _ENCODED_PATH_QUERY.fullmatch(text):
        return text  # the common case: nothing to encode
    text = _PERCENT_ESCAPE.sub("%25", text)
    out = []
    for char in text:
        if char in _PATH_SAFE:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def parse_host_port(value: str) -> tuple[str, int]:
    """Parse "host:port" or "[v6]:port" into a normalised (host, port) pair.

    The host is normalised like a URL host, so the pair matches CheckedUrl.host and .port.
    Raises GuardDenied with reason `invalid_host_port`.
    """
    try:
        checked = check_url(f"http://{value}/")
    except GuardDenied as error:
        raise GuardDenied("invalid_host_port", f"{value!r} is not host:port: {error.message}",
                          fix='Write "127.0.0.1:8080", "[::1]:8080" or "nas.local:8080".') from None
    if not re.search(r":\d+$", value):
        raise GuardDenied("invalid_host_port", f"{value!r} has no port.",
                          fix='Write "127.0.0.1:8080", "[::1]:8080" or "nas.local:8080".')
    return checked.host, checked.port

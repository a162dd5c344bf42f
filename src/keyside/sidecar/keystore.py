"""The secret values the sidecar keeps in memory, and every form in which one could leak.

A key leaves the sidecar in the form its service injects it: as is, percent-encoded in a query
or path, or inside a Basic credential. An upstream that echoes the request sends back that form,
so the scrub pattern covers all of them, plus the JSON-escaped, HTML-escaped and base64
spellings and every token.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

from keyside.manifest import ServiceSpec
from keyside.redact import Redactor
from keyside.sidecar.scrub import ScrubPattern


def basic_credential(username: str | None, key: str) -> str:
    """Return the base64 part of `Authorization: Basic` for the key (as password, or as user)."""
    pair = f"{username}:{key}" if username is not None else f"{key}:"
    return base64.b64encode(pair.encode("utf-8")).decode("ascii")


# Base64 forms are added only for values at least this long. A shorter value's base64 core is
# only a few characters, which unrelated base64 data (an image, a hash) would match by chance.
BASE64_MIN_BYTES = 16


def leak_forms(value: str) -> set[str]:
    """Return the spellings of `value` an upstream could echo.

    These are raw, URL-encoded, JSON-escaped, HTML-escaped and, for long values, base64.
    """
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1], html.escape(value)}
    return forms | base64_forms(value)


def base64_forms(value: str) -> set[str]:
    """Return the base64 text of `value` alone and inside a larger base64 blob, both alphabets.

    Base64 turns 3 bytes into 4 characters, so the characters for a value depend on where it
    starts in the blob, modulo 3. For each of the 3 offsets the form is the run of characters
    that encode bytes of the value only. Up to 2 bytes at each end of the value fall into
    characters shared with neighbouring bytes and stay unmasked.
    """
    data = value.encode("utf-8")
    if len(data) < BASE64_MIN_BYTES:
        return set()
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(encode(data).decode("ascii"))  # the value encoded on its own, padding included
        for offset in range(3):
            padded = b"\0" * offset + data
            # With an offset, the first 4 characters mix the prefix with the value's first bytes.
            start = 4 if offset else 0
            end = len(padded) // 3 * 4  # the last, partial group depends on the bytes after it
            forms.add(encode(padded).decode("ascii")[start:end])
    return forms


class KeyStore:
    """Secret values by name, with a scrub pattern rebuilt after every change.

    Every value ever stored is also added to `redactor`, which masks log lines. Values are never
    removed from it, so a line about a deleted key is still masked.
    """

    def __init__(self, services: dict[str, ServiceSpec], redactor: Redactor,
                 extra_values: Callable[[], Iterable[str]] = tuple):
        self._services = services
        self._values: dict[str, str] = {}
        self._redactor = redactor
        self._extra_values = extra_values
        self._pattern: ScrubPattern | None = None

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def names(self) -> list[str]:
        return sorted(self._values)

    def set(self, name: str, value: str) -> None:
        for form in self.forms_of(name, value):
            self._redactor.add(form)
        self._values[name] = value
        self.invalidate()

    def delete(self, name: str) -> bool:
        existed = self._values.pop(name, None) is not None
        self.invalidate()
        return existed

    def invalidate(self) -> None:
        """Drop the cached pattern; call after the set of tokens changes too."""
        self._pattern = None

    def forms_of(self, name: str, value: str) -> set[str]:
        """Return every leak form of the secret `name`, including the Basic credentials built from it."""
        forms = leak_forms(value)
        for service in self._services.values():
            if service.secret == name and service.inject is not None and service.inject.kind == "basic":
                forms.add(basic_credential(service.inject.username, value))
        return forms

    @property
    def pattern(self) -> ScrubPattern:
        """The scrub pattern for all current secrets and tokens."""
        pattern = self._pattern
        if pattern is None:
            values: set[str] = set()
            for name, value in self._values.items():
                values |= self.forms_of(name, value)
            for token in self._extra_values():
                values |= leak_forms(token)
            pattern = self._pattern = ScrubPattern(values)
        return pattern

"""Origin bindings: the upstream origins each stored key was saved for.

Apps that share an `[app] id` share one vault entry, so a manifest in another folder can name
the same secret with a different upstream. Each stored value therefore carries the origins of
the services that used it when it was saved, and the vault withholds a value from a manifest
that would send it to an origin outside that set.

The bindings live in the same JSON object as the values, under BINDINGS_KEY, which no secret
name can match. Its value is a JSON document encoded as a string, so the entry stays an object
of string to string and keyside versions that predate bindings still read it and ignore the key.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from keyside.manifest import Manifest
from keyside.vault.store import Entries

log = logging.getLogger(__name__)

# SECRET_NAME_PATTERN allows only upper-case letters, digits and "_", so this key never collides.
BINDINGS_KEY = "keyside:bindings"
BINDINGS_VERSION = 1

Origins = tuple[str, ...]

DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_origin(origin: str) -> str:
    """Return `origin` as scheme://host[:port] in lower case, without the scheme's default port."""
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def manifest_origins(manifest: Manifest, name: str) -> Origins:
    """Return the sorted upstream origins of the manifest services that inject secret `name`."""
    return tuple(sorted({canonical_origin(service.upstream) for service in manifest.services.values()
                         if service.secret == name}))


def read_bindings(entries: Entries) -> dict[str, Origins]:
    """Return the recorded origins per secret name, or {} when the entry has no bindings.

    A malformed bindings document is logged and read as "no origin recorded" for every stored
    name, which withholds those values until they are set or bound again.
    """
    raw = entries.get(BINDINGS_KEY)
    if raw is None:
        return {}
    try:
        document = json.loads(raw)
        origins_by_name = document["origins"]
        if not isinstance(origins_by_name, dict):
            raise TypeError("origins is not an object")
        bindings: dict[str, Origins] = {}
        for name, origins in origins_by_name.items():
            if not isinstance(origins, list) or not all(isinstance(origin, str) for origin in origins):
                raise TypeError(f"origins of {name!r} is not a list of strings")
            bindings[name] = tuple(sorted(origins))
        return bindings
    except (ValueError, KeyError, TypeError) as error:
        log.warning("vault bindings unreadable key=%s error=%s, so every stored secret is withheld until it "
                    "is set or bound again", BINDINGS_KEY, error)
        return {name: () for name in entries if name != BINDINGS_KEY}


def write_bindings(entries: Entries, bindings: dict[str, Origins]) -> Entries:
    """Store `bindings` for the names that have a value in `entries`, and return `entries`.

    Bindings of names without a value are dropped, and the key is removed when none is left, so
    an entry whose last secret was deleted becomes empty.
    """
    stored_bindings = {name: sorted(origins) for name, origins in bindings.items()
                       if name in entries and name != BINDINGS_KEY}
    if stored_bindings:
        entries[BINDINGS_KEY] = json.dumps({"version": BINDINGS_VERSION, "origins": stored_bindings},
                                           sort_keys=True, separators=(",", ":"))
    else:
        entries.pop(BINDINGS_KEY, None)
    return entries


def is_covered(recorded: Origins, current: Origins) -> bool:
    """Return whether every origin in `current` is one of the `recorded` origins."""
    return set(current) <= set(recorded)


def describe_origins(origins: Origins) -> str:
    """Return `origins` as a comma-separated list, or a phrase for the empty list."""
    return ", ".join(origins) if origins else "no upstream origin"


def describe_mismatch(recorded: Origins, current: Origins) -> str:
    """Return a one-line explanation of why a stored value is withheld."""
    return f"bound to {describe_origins(recorded)}; this app would send it to {describe_origins(current)}"

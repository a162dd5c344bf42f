"""The attack corpus that ships with keyside, in `keyside/selftest/data/`.

Six files are copies of the test suite's tables under `tests/data/` (the guard's SSRF cases and
the sidecar's Host, Origin, path and header cases), so the self-test runs the very cases CI runs.
`tests/test_selftest_corpus.py` fails when a copy differs from its original. The other files hold
the cases only the self-test sends.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from typing import Any

# Files copied byte for byte from tests/data/ of the source tree.
SHARED_FILES = (
    "ssrf_urls.toml",
    "ssrf_addresses.toml",
    "sidecar_host_headers.json",
    "sidecar_origins.json",
    "sidecar_paths.json",
    "sidecar_request_headers.json",
)
# Files that exist only here.
OWN_FILES = (
    "sidecar_tokens.json",
    "sidecar_control_characters.json",
    "sidecar_redirects.json",
    "sidecar_key_echo.json",
    "ssrf_allowances.toml",
)


def read_text(name: str) -> str:
    """Return the text of one corpus file."""
    return (resources.files("keyside.selftest") / "data" / name).read_text(encoding="utf-8")


def load(name: str) -> Any:
    """Parse one corpus file, JSON or TOML by its extension."""
    text = read_text(name)
    if name.endswith(".toml"):
        return tomllib.loads(text)
    return json.loads(text)


def cases(name: str, key: str = "cases") -> list[dict[str, Any]]:
    """Return the list of cases in one corpus file (`[[case]]` tables in TOML, `cases` in JSON)."""
    data = load(name)
    return list(data["case"] if name.endswith(".toml") else data[key])
